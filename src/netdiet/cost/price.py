"""Price an assignment of knobs: the one entry point methods use for every metric.

`price` takes an `Assignment` (or any mapping of knob ids to values) and splits it by kind for the
analytic cost model, so a method never needs to know which knob kinds exist or how each is priced.
Values may be hard (index sets, ints) or relaxed (floats, tensors with gradients): the same code gives
the exact cost and the differentiable surrogate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from netdiet.cost.analytic import CostReport, cost
from netdiet.cost.latency import LatencyModel
from netdiet.errors import ConfigError
from netdiet.space import Assignment, Space

METRICS = ("flops", "params", "weight_bytes", "bops", "latency_ms")


def price(
    space: Space,
    assignment: Mapping[str, Any] | None = None,
    *,
    latency: LatencyModel | None = None,
    per_layer: bool = False,
) -> CostReport:
    """The cost report of `assignment` (knobs it does not name stay dense).

    Bit knobs change BOPs and weight bytes, and latency where the table has int8 timings (a layer whose
    weight and input bits are both <= 8 is priced at int8).
    """
    a = assignment if isinstance(assignment, Assignment) else Assignment(assignment or {})
    ranks = Assignment.of(ranks=a.ranks).counts()  # kept directions -> how many
    return cost(
        space,
        a.keep or None,
        ranks={kid.split(":", 1)[1]: n for kid, n in ranks.items()} or None,
        weight_bits=a.weight_bits or None,
        act_bits=a.act_bits or None,
        per_layer=per_layer,
        latency=latency,
        blocks=a.blocks or None,
    )


def metric_value(
    space: Space, assignment: Mapping[str, Any] | None, metric: str, latency: LatencyModel | None = None
) -> Any:
    """One metric of `price(...)`: a float, or a tensor when the assignment is relaxed."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric '{metric}'; metrics are {METRICS}")
    value = getattr(price(space, assignment, latency=latency), metric)
    if value is None:
        raise ConfigError(f"metric {metric} needs a latency model (a latency table); none was given")
    return value


def rank_pays(space: Space, weight: str, keep_counts: Mapping[str, int], rank: int) -> bool:
    """Whether `rank` is cheaper than the dense layer at the kept channel counts (FLOPs and params)."""
    info = space.param_info(weight)
    if info is None:
        raise ConfigError(f"'{weight}' is not a parameter of the analysed model")
    atom_counts = space.counts(keep_counts)
    od = space.out_dim(weight)
    out = int(space.dim_size(info.dims[od], atom_counts))
    rest = 1
    for d, layout in enumerate(info.dims):
        if d != od:
            rest *= int(space.dim_size(layout, atom_counts))
    return rank * (out + rest) < out * rest
