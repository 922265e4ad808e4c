"""What every compression method provides: a model to train, a penalty, a step, and an assignment.

A method is one file: a class registered with `@register_method` whose `Config` is a dataclass of its
options (validated on construction). It declares what it needs (`needs_training`: its penalty joins a
training run through the hooks; `needs_evaluator`: it scores candidate assignments), gets a
`MethodContext`, and returns an `Assignment` of knob values from `read_off()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.methods.context import MethodContext
from netdiet.space import Assignment


@dataclass
class NoOptions:
    """The config of a method without options."""


class Method:
    """A compression method over a context's knobs: trains (or not) and reads off an assignment under
    the budget. Subclasses set `self.model` (what the user trains; may be a copy of the original) and
    implement `read_off`; trained methods also `penalty` and `step`."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type] = NoOptions
    needs_training: ClassVar[bool] = False  # its penalty must join a training run before read_off
    needs_evaluator: ClassVar[bool] = False  # it calls context.evaluate(assignment)
    # optimizer steps the method needs to learn from in its training phase; a shorter phase is run on
    # smaller batches of the same data by `netdiet.compress` (0: any length)
    min_steps: ClassVar[int] = 0
    # bit width of every layer when the caller does not choose (32: the method does not quantize)
    default_bits: ClassVar[int] = 32
    # fine-tune epochs after read-off when the caller does not choose (ptq: none)
    default_finetune_epochs: ClassVar[float] = 1.0
    # the method sets every bit knob itself (learned mixed precision): the caller fixes none
    chooses_bits: ClassVar[bool] = False
    # the method trained with quantizers in the model: its result is quantized before the fine-tune,
    # which is then quantization-aware (not fine-tuned in float and quantized after)
    trains_quantized: ClassVar[bool] = False

    @classmethod
    def learns_bits(cls, options: dict[str, Any]) -> bool:
        """Whether the method, built with these config options, sets every bit knob itself (then the
        caller fixes none and the result is quantized at the method's bits)."""
        return cls.chooses_bits

    def __init__(self, model: nn.Module, context: MethodContext, config: Any = None) -> None:
        if config is None:
            config = self.Config()
        if not isinstance(config, self.Config):
            raise ConfigError(
                f"method '{self.name}' takes a {self.Config.__name__}, got {type(config).__name__}"
            )
        if self.needs_evaluator and context.evaluator is None:
            context.evaluate(Assignment())  # raises the named error
        self.config = config
        self.context = context
        self.original = model
        self.space = context.space
        self.budget = context.budget
        self.metric = context.metric
        self.latency = context.latency
        self.multiples = context.multiples
        self.dense = float(context.price())  # every knob at its largest, with the fixed bits
        self.reference = context.reference()  # the dense fp32 model: what a relative budget is a fraction of
        self.target = context.budget.target(self.reference)
        self.model: nn.Module = model

    def check_feasible(self, minimum: float) -> None:
        if minimum > self.target:
            raise ConfigError(
                f"budget {self.metric} <= {self.target:.4g} is below what the model's constraints allow: the "
                f"smallest reachable {self.metric} is {minimum:.4g} ({minimum / self.reference:.1%} of the dense "
                f"fp32 model's {self.reference:.4g}). Raise the budget or exclude fewer modules."
            )

    def begin(self, total_steps: int) -> None:
        """Called once before training with the number of optimizer steps the loop will make."""

    def penalty(self) -> torch.Tensor:
        return torch.zeros(())

    def step(self, loss: float | None = None) -> None:
        """Called after the user's optimizer.step(), with the step's loss when the loop knows it."""

    def own_parameters(self) -> list[torch.Tensor]:
        """Tensors the method trains itself, outside the user's model and optimizer (l1l2's gates):
        under data parallelism their gradients are averaged over ranks before `step`, as DDP does for
        the model's, so every rank keeps the same gates and ends at the same architecture."""
        return []

    def status(self) -> dict[str, float]:
        """What the method reports per step (progress bars, logs)."""
        return {}

    def read_off(self) -> Assignment:
        raise NotImplementedError

    def search_record(self) -> dict[str, Any]:
        """What a search found and how (episodes, generations, predictor quality), for the report;
        empty for methods that do not search."""
        return {}

    def weights_for_export(self, assignment: Assignment | None) -> nn.Module:
        """A plain (un-parametrised) model carrying the weights to export."""
        return self.model
