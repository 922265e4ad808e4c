"""Baselines in the same interface as l1l2, so benchmarks compare like with like.

Both are one-shot (no penalty during training): they choose units from weight magnitudes of the model
as it is when `export()` is called, then the same fine-tune follows.

- `uniform`: one keep ratio for every group (the largest that meets the budget), units chosen by norm.
- `magnitude`: a global ranking of units by their group-normalised L2 norm, cut greedily to the budget
  on the exact cost model.
"""

from __future__ import annotations

import torch
from torch import nn

from netdiet.cost import cost
from netdiet.cost.latency import LatencyModel
from netdiet.methods.base import Method
from netdiet.methods.budget import Budget
from netdiet.methods.readoff import Setting, minimum_cost, read_off
from netdiet.space import Space
from netdiet.space.units import unit_index


def unit_norms(space: Space, model: nn.Module) -> dict[str, torch.Tensor]:
    """L2 norm of every unit over all the weights it appears in (both sides: producers and readers)."""
    tensors = dict(model.named_parameters())
    table = space.analysis.table
    out: dict[str, torch.Tensor] = {}
    for group in space.groups:
        sq = torch.zeros(group.size, dtype=torch.float64)
        for member in group.members:
            t = tensors.get(member.param)
            if t is None or t.device.type == "meta":
                continue
            idx = unit_index(table, space.analysis.params[member.param].dims[member.dim], group.atom)
            per_pos = (
                t.detach().double().pow(2).movedim(member.dim, 0).reshape(t.shape[member.dim], -1).sum(1)
            )
            valid = idx >= 0
            sq.index_add_(0, idx[valid], per_pos[valid])
        out[group.name] = sq.sqrt()
    return out


class Magnitude(Method):
    name = "magnitude"

    def __init__(
        self, model: nn.Module, space: Space, budget: Budget, latency: LatencyModel | None = None
    ) -> None:
        super().__init__(model, space, budget, latency)
        self.check_feasible(minimum_cost(space, self.metric, [], self.latency, self.multiples))

    def read_off(self) -> Setting:
        norms = unit_norms(self.space, self.model)
        scores = {name: n / n.mean().clamp(min=1e-12) for name, n in norms.items()}
        return read_off(
            self.space,
            scores,
            {},
            self.metric,
            self.target,
            tolerance=0.01,
            start="full",
            latency=self.latency,
            multiples=self.multiples,
        )


class Uniform(Method):
    name = "uniform"

    def __init__(
        self, model: nn.Module, space: Space, budget: Budget, latency: LatencyModel | None = None
    ) -> None:
        super().__init__(model, space, budget, latency)
        self.check_feasible(minimum_cost(space, self.metric, [], self.latency, self.multiples))

    def _counts(self, ratio: float) -> dict[str, int]:
        out = {}
        for g in self.space.groups:
            m = self.multiples.get(g.name, 1)
            n = max(g.min_keep, int(round(g.size * ratio)))
            out[g.name] = min(g.size, max(m, int(round(n / m)) * m)) if m > 1 else n
        return out

    def _value(self, ratio: float) -> float:
        report = cost(self.space, self._counts(ratio), per_layer=False, latency=self.latency)
        return float(getattr(report, self.metric))

    def read_off(self) -> Setting:
        lo, hi = 0.0, 1.0
        for _ in range(40):  # the largest common ratio whose cost is within the budget
            mid = (lo + hi) / 2
            if self._value(mid) <= self.target:
                lo = mid
            else:
                hi = mid
        counts = self._counts(lo)
        norms = unit_norms(self.space, self.model)
        keep = {
            name: torch.sort(torch.argsort(norms[name], descending=True)[:n]).values
            for name, n in counts.items()
        }
        return Setting(keep, {})
