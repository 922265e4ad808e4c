"""What every compression method provides: a model to train, a penalty, a step, and a read-off."""

from __future__ import annotations

import torch
from torch import nn

from netdiet.cost import cost
from netdiet.cost.latency import LatencyModel
from netdiet.errors import ConfigError
from netdiet.methods.budget import Budget
from netdiet.methods.readoff import Setting
from netdiet.space import Space


class Method:
    """A compression method over a Space: trains (or not) and reads off a setting under the budget.

    With a latency budget, `self.latency` (a LatencyModel) prices settings and `self.multiples` holds the
    channel multiples its table measured to pay. Subclasses set `self.model` (what the user trains; may equal a copy of the original) and implement
    `penalty`, `step` and `read_off`.
    """

    name = "base"
    needs_training = False  # True: the method's penalty must join a training run before read_off
    # optimizer steps the method needs to learn from in its training phase; a shorter phase is run on
    # smaller batches of the same data by `netdiet.compress` (0: any length)
    min_steps = 0

    def __init__(
        self, model: nn.Module, space: Space, budget: Budget, latency: LatencyModel | None = None
    ) -> None:
        self.original = model
        self.space = space
        self.budget = budget
        self.metric = budget.metric
        if budget.needs_latency and latency is None:
            raise ConfigError(
                f"budget {budget.name}={budget.value} needs a latency table for the target device: pass "
                "latency_table= (from `netdiet profile MODEL --out TABLE.json`) or let netdiet.compress profile"
            )
        self.latency = latency if budget.needs_latency else None
        # channel multiples the latency table measured to pay (ONNX Runtime's blocked kernels, ...)
        self.multiples: dict[str, int] = self.latency.group_multiples() if self.latency is not None else {}
        self.dense = float(getattr(cost(space, per_layer=False, latency=self.latency), self.metric))
        self.target = budget.target(self.dense)
        self.model: nn.Module = model

    def check_feasible(self, minimum: float) -> None:
        if minimum > self.target:
            raise ConfigError(
                f"budget {self.metric} <= {self.target:.4g} is below what the model's constraints allow: the "
                f"smallest reachable {self.metric} is {minimum:.4g} ({minimum / self.dense:.1%} of dense "
                f"{self.dense:.4g}). Raise the budget or exclude fewer modules."
            )

    def begin(self, total_steps: int) -> None:
        """Called once before training with the number of optimizer steps the loop will make."""

    def penalty(self) -> torch.Tensor:
        return torch.zeros(())

    def step(self, loss: float | None = None) -> None:
        """Called after the user's optimizer.step(), with the step's loss when the loop knows it."""

    def status(self) -> dict[str, float]:
        """What the method reports per step (progress bars, logs)."""
        return {}

    def read_off(self) -> Setting:
        raise NotImplementedError

    def weights_for_export(self, setting: Setting | None) -> nn.Module:
        """A plain (un-parametrised) model carrying the weights to slice."""
        return self.model
