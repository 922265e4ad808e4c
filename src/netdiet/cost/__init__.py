"""Stage 3: what a setting of the knobs costs (exact analytic counts; the same code gives surrogates)."""

from netdiet.cost.analytic import CostReport, LayerCost, cost
from netdiet.cost.reference import measured_flops

__all__ = ["CostReport", "LayerCost", "cost", "measured_flops"]
