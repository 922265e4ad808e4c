"""Stage 3: what an assignment of the knobs costs (exact analytic counts; the same code gives surrogates)."""

from netdiet.cost.analytic import CostReport, LayerCost, cost
from netdiet.cost.price import METRICS, metric_value, price, rank_pays
from netdiet.cost.reference import measured_flops

__all__ = [
    "METRICS",
    "CostReport",
    "LayerCost",
    "cost",
    "measured_flops",
    "metric_value",
    "price",
    "rank_pays",
]
