"""What a method is given: the knobs, a price for any assignment, the budget and, if it asks, an evaluator.

Methods never read the graph or the export stage; everything they need to choose knob values comes
through here. `price(assignment)` returns the budget's metric (a float, or a tensor for relaxed
values); `evaluate(assignment)` returns a score (higher is better, e.g. accuracy of the masked model on
held-out data) and exists only when the caller supplied an evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netdiet.cost import metric_value
from netdiet.cost.latency import LatencyModel
from netdiet.errors import ConfigError
from netdiet.methods.budget import Budget
from netdiet.space import Assignment, Knob, Space

Evaluator = Callable[[Assignment], float]


@dataclass
class MethodContext:
    """The space and budget a method works on, and the services the caller provides."""

    space: Space
    budget: Budget
    latency: LatencyModel | None = None
    evaluator: Evaluator | None = None
    # channel multiples the latency table measured to pay (ONNX Runtime's blocked kernels, ...)
    multiples: dict[str, int] = field(default_factory=dict)
    # knobs the caller fixed for every candidate (e.g. 8-bit weights and activations everywhere): priced
    # with each assignment, merged into the one the method reads off
    fixed: Assignment = field(default_factory=Assignment)

    def __post_init__(self) -> None:
        if self.budget.needs_latency and self.latency is None:
            raise ConfigError(
                f"budget {self.budget.name}={self.budget.value} needs a latency table for the target device: "
                "pass latency_table= (from `netdiet profile MODEL --out TABLE.json`) or let netdiet.compress "
                "profile"
            )
        if not self.budget.needs_latency:
            self.latency = None
        if self.latency is not None and not self.multiples:
            self.multiples = self.latency.group_multiples()

    @property
    def metric(self) -> str:
        return self.budget.metric

    @property
    def knobs(self) -> list[Knob]:
        return self.space.knobs

    def price(self, assignment: Mapping[str, Any] | None = None, metric: str | None = None) -> Any:
        """The budget's metric (or `metric`) of an assignment with the fixed knobs; knobs neither names
        stay dense."""
        merged = {**self.fixed, **(assignment or {})} if self.fixed else assignment
        return metric_value(self.space, merged, metric or self.metric, self.latency)

    def reference(self) -> float:
        """The dense fp32 model's metric: what a relative budget (`bops=0.1`) is a fraction of."""
        return float(metric_value(self.space, None, self.metric, self.latency))

    def complete(self, assignment: Assignment) -> Assignment:
        """The method's assignment with the fixed knobs added (the method's own values win)."""
        return Assignment({**self.fixed, **assignment}) if self.fixed else assignment

    def evaluate(self, assignment: Assignment) -> float:
        if self.evaluator is None:
            raise ConfigError(
                "this method scores candidate assignments and needs an evaluator: pass evaluator= (a "
                "function of the masked model, e.g. accuracy on held-out data) to Compressor, or eval_data= "
                "(a held-out split, never the test split) or eval_fn= to netdiet.compress"
            )
        return float(self.evaluator(assignment))
