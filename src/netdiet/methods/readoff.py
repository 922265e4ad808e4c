"""From gate values to a hard assignment that meets the budget exactly: threshold, then greedy fix-up.

The threshold gives what the relaxed count promised; the fix-up then walks unit by unit on the exact
cost model, removing the unit with the lowest (importance / marginal cost) while the cost is above the
budget, and restoring the best removed units while it is more than the tolerance below it. Importance is
a gate divided by its group's largest gate, because S(a) is scale-invariant per group and raw gate values
are not comparable across groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from netdiet.errors import ConfigError
from netdiet.methods.context import MethodContext
from netdiet.space import Assignment


def metric_of(context: MethodContext, counts: Mapping[str, Any], ranks: Mapping[str, Any]) -> float:
    return float(context.price(Assignment.of(keep=counts, ranks=ranks)))


def threshold(values: torch.Tensor, min_keep: int = 1) -> torch.Tensor:
    a = values.detach().abs()
    cut = a.pow(2).sum() / (a.sum() + 1e-12)
    kept = torch.nonzero(a >= cut).flatten()
    if kept.numel() < min_keep:
        kept = torch.topk(a, min_keep).indices
    return torch.sort(kept).values


def read_off(
    context: MethodContext,
    group_gates: Mapping[str, torch.Tensor],
    rank_gates: Mapping[str, torch.Tensor],
    target: float,
    tolerance: float = 0.01,
    start: str = "threshold",
    criterion: str = "importance",
    start_counts: Mapping[str, int] | None = None,
    normalise: bool = True,
) -> Assignment:
    """An assignment of keep and rank knobs whose exact cost in the context's metric lies in
    [target * (1 - tolerance), target].

    `start="threshold"` begins from the gates' own read-off; `start="full"` from the dense model (for
    importance scores that are not gates, such as weight norms). `criterion="importance"` removes the
    least important unit that saves cost; `"ratio"` the lowest importance per unit of cost saved (a
    knapsack heuristic that tends to starve the most expensive group, e.g. a residual stream).
    The context's `multiples` map group names to a channel multiple that the latency table measured to
    pay: those groups keep a multiple of it and move in steps of it.
    `normalise=False` takes the scores as already comparable across groups (else each group's scores
    are divided by its largest).
    """
    space, metric, latency, multiples = context.space, context.metric, context.latency, context.multiples
    order: dict[tuple[str, str], torch.Tensor] = {}  # (kind, name) -> unit indices by decreasing importance
    importance: dict[tuple[str, str], torch.Tensor] = {}
    kept: dict[tuple[str, str], int] = {}
    min_keep: dict[tuple[str, str], int] = {}
    step: dict[tuple[str, str], int] = {}
    for g in space.groups:
        a = group_gates[g.name].detach().abs()
        key = ("group", g.name)
        importance[key] = a / a.max().clamp(min=1e-12) if normalise else a
        order[key] = torch.argsort(a, descending=True, stable=True)
        kept[key] = int(threshold(a, g.min_keep).numel()) if start == "threshold" else g.size
        if start_counts is not None and g.name in start_counts:
            kept[key] = max(g.min_keep, min(g.size, int(start_counts[g.name])))
        min_keep[key] = g.min_keep
        m = int((multiples or {}).get(g.name, 1))
        step[key] = m
        if m > 1:
            min_keep[key] = max(m, -(-g.min_keep // m) * m)
            kept[key] = min(g.size, max(min_keep[key], int(round(kept[key] / m)) * m))
    for w, b in rank_gates.items():
        b = b.detach().abs()
        key = ("rank", w)
        importance[key] = b / b.max().clamp(min=1e-12) if normalise else b
        order[key] = torch.argsort(b, descending=True, stable=True)
        kept[key] = int(threshold(b, 1).numel()) if start == "threshold" else b.numel()
        if start_counts is not None and w in start_counts:
            kept[key] = max(1, min(b.numel(), int(start_counts[w])))
        min_keep[key] = 1
        step[key] = 1

    def current() -> float:
        counts = {n: kept[("group", n)] for (k, n) in kept if k == "group"}
        ranks = {n: kept[("rank", n)] for (k, n) in kept if k == "rank"}
        return metric_of(context, counts, ranks)

    def marginals() -> dict[tuple[str, str], float]:
        """Saving per unit of one step down, for every knob.

        Counted metrics are multilinear in the counts: one autograd pass gives every derivative. Measured
        latency is piecewise linear, flat in places and not monotone across channel multiples, so there
        each knob's saving is the exact difference of one step down.
        """
        if latency is not None and metric == "latency_ms":
            base = current()
            out: dict[tuple[str, str], float] = {}
            for key in kept:
                if kept[key] - step[key] < min_keep[key]:
                    out[key] = 0.0
                    continue
                kept[key] -= step[key]
                out[key] = (base - current()) / step[key]
                kept[key] += step[key]
            return out
        leaves = {
            key: torch.tensor(float(n), dtype=torch.float64, requires_grad=True) for key, n in kept.items()
        }
        counts = {n: leaves[("group", n)] for (k, n) in leaves if k == "group"}
        ranks = {n: leaves[("rank", n)] for (k, n) in leaves if k == "rank"}
        total = context.price(Assignment.of(keep=counts, ranks=ranks))
        if not isinstance(total, torch.Tensor) or not total.requires_grad:
            return {key: 0.0 for key in leaves}
        grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        return {key: float(g) if g is not None else 0.0 for key, g in zip(leaves, grads)}

    value = current()
    lower = target * (1.0 - tolerance)
    while value > target:
        best, best_score = None, float("inf")
        grads = marginals()
        for key in kept:
            if kept[key] <= min_keep[key]:
                continue
            saving = grads[key]
            if saving <= 0:
                continue
            block = order[key][kept[key] - step[key] : kept[key]]
            weakest = float(importance[key][block].max())
            score = weakest * step[key] / saving if criterion == "ratio" else weakest
            if score < best_score:
                best, best_score = key, score
        if best is None:
            # measured latency is not monotone in the counts (a count off a kernel's block is slower):
            # where no single step saves, look further down each knob for the first count that does
            jump = _look_ahead(kept, min_keep, step, order, importance, current, value)
            if jump is None:
                raise ConfigError(
                    f"cannot reach {metric} <= {target:.4g}: the smallest setting the constraints allow costs "
                    f"{value:.4g}"
                )
            best, n_steps = jump
            kept[best] -= n_steps * step[best]
            value = current()
            continue
        kept[best] -= step[best]
        value = current()
    while value < lower:
        grads = marginals()
        candidates = sorted(
            (key for key in kept if kept[key] < order[key].numel()),
            key=lambda k: (
                -float(importance[k][order[k][kept[k]]])
                / (max(grads[k], 1e-12) if criterion == "ratio" else 1.0)
            ),
        )
        for key in candidates:
            kept[key] += step[key]
            trial = current()
            if trial <= target:
                value = trial
                break
            kept[key] -= step[key]
        else:
            sizes = {key: int(order[key].numel()) for key in kept}
            value = _swap_into_window(
                kept, min_keep, step, sizes, candidates[:5], current, lower, target, value
            )
            break
    keep = {
        n: torch.sort(order[("group", n)][: kept[("group", n)]]).values for (k, n) in kept if k == "group"
    }
    ranks = {n: torch.sort(order[("rank", n)][: kept[("rank", n)]]).values for (k, n) in kept if k == "rank"}
    return Assignment.of(keep=keep, ranks=ranks)


LOOK_AHEAD_STEPS = 16


def _look_ahead(kept, min_keep, step, order, importance, current, value):  # type: ignore[no-untyped-def]
    """(knob, steps) of the least important block whose removal, up to LOOK_AHEAD_STEPS steps down, is
    the first that lowers the cost; None when no knob has one."""
    best, best_score = None, float("inf")
    for key in kept:
        start = kept[key]
        for n in range(2, LOOK_AHEAD_STEPS + 1):
            if start - n * step[key] < min_keep[key]:
                break
            kept[key] = start - n * step[key]
            saves = current() < value
            kept[key] = start
            if saves:
                block = order[key][start - n * step[key] : start]
                score = float(importance[key][block].max())
                if score < best_score:
                    best, best_score = (key, n), score
                break
    return best


def _swap_into_window(
    kept, min_keep, step, sizes, adds, current, lower: float, target: float, value: float
) -> float:  # type: ignore[no-untyped-def]
    """When no single unit fits the gap (coarse units), try small moves: add one or two units of a
    group and drop one unit of another; take the best move that stays within the budget, repeat while
    it helps."""
    while value < lower:
        best_value, best_move = value, None
        for add in adds:
            for n_add in (step[add], 2 * step[add]):
                if kept[add] + n_add > sizes[add]:
                    continue
                kept[add] += n_add
                for rem in kept:
                    if rem == add or kept[rem] <= min_keep[rem]:
                        continue
                    kept[rem] -= step[rem]
                    trial = current()
                    kept[rem] += step[rem]
                    if best_value < trial <= target:
                        best_value, best_move = trial, (add, n_add, rem)
                kept[add] -= n_add
        if best_move is None:
            return value
        add, n_add, rem = best_move
        kept[add] += n_add
        kept[rem] -= step[rem]
        value = best_value
    return value


def minimum_cost(context: MethodContext, rank_weights: list[str]) -> float:
    """The cheapest assignment the constraints allow: every group at min_keep, every rank at 1."""
    multiples = context.multiples
    counts = {g.name: max(g.min_keep, int(multiples.get(g.name, 1))) for g in context.space.groups}
    return metric_of(context, counts, {w: 1 for w in rank_weights})
