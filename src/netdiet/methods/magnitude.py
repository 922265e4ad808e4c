"""`magnitude`: a global ranking of units by their group-normalised L2 norm, cut greedily to the budget
on the exact cost model. One-shot (no penalty during training): it reads the model as it is when
`read_off()` is called; the same fine-tune as every method follows."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from netdiet.errors import ConfigError
from netdiet.methods.base import Method
from netdiet.methods.context import MethodContext
from netdiet.methods.importance import unit_norms
from netdiet.methods.readoff import minimum_cost, read_off
from netdiet.methods.registry import register_method
from netdiet.space import Assignment


@dataclass
class MagnitudeConfig:
    """`tolerance`: the exported cost lands in [budget * (1 - tolerance), budget]."""

    tolerance: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 0.5:
            raise ConfigError(f"tolerance must be in (0, 0.5), got {self.tolerance}")


@register_method("magnitude")
class Magnitude(Method):
    Config = MagnitudeConfig
    config: MagnitudeConfig

    def __init__(
        self, model: nn.Module, context: MethodContext, config: MagnitudeConfig | None = None
    ) -> None:
        super().__init__(model, context, config)
        self.check_feasible(minimum_cost(context, []))

    def read_off(self) -> Assignment:
        norms = unit_norms(self.space, self.model)
        scores = {name: n / n.mean().clamp(min=1e-12) for name, n in norms.items()}
        return read_off(self.context, scores, {}, self.target, tolerance=self.config.tolerance, start="full")
