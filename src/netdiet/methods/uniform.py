"""`uniform`: one keep ratio for every group (the largest that meets the budget), units chosen by norm.
One-shot, like `magnitude`; the hand rule a learned allocation has to beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from netdiet.methods.base import Method, NoOptions
from netdiet.methods.context import MethodContext
from netdiet.methods.importance import unit_norms
from netdiet.methods.readoff import minimum_cost
from netdiet.methods.registry import register_method
from netdiet.space import Assignment


@dataclass
class UniformConfig(NoOptions):
    """No options: the ratio is found by bisection on the exact cost."""


@register_method("uniform")
class Uniform(Method):
    Config = UniformConfig

    def __init__(self, model: nn.Module, context: MethodContext, config: UniformConfig | None = None) -> None:
        super().__init__(model, context, config)
        self.check_feasible(minimum_cost(context, []))

    def _counts(self, ratio: float) -> dict[str, int]:
        out = {}
        for g in self.space.groups:
            m = self.multiples.get(g.name, 1)
            n = max(g.min_keep, int(round(g.size * ratio)))
            out[g.name] = min(g.size, max(m, int(round(n / m)) * m)) if m > 1 else n
        return out

    def _value(self, ratio: float) -> float:
        return float(self.context.price(Assignment.of(keep=self._counts(ratio))))

    def read_off(self) -> Assignment:
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
        return Assignment.of(keep=keep)
