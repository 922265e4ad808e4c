"""`two-stage`: prune to the budget, then quantize - the baseline joint methods claim to beat.

Stage one is a pruning method (`prune`: magnitude, one-shot, or l1l2, trained) with every layer at
the fixed bits (8 by default) priced into its budget, then the usual float fine-tune; stage two
quantizes the fine-tuned slim model (BN folded, ranges calibrated) and fine-tunes it
quantization-aware for `qat_epochs` (`netdiet.compress` reads `qat_epochs` from the method). With equal
total epochs, give `finetune_epochs` = the total minus `qat_epochs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.methods.base import Method
from netdiet.methods.context import MethodContext
from netdiet.methods.registry import method_class, register_method
from netdiet.space import Assignment

PRUNERS = ("magnitude", "l1l2")


@dataclass
class TwoStageConfig:
    prune: str = "magnitude"
    qat_epochs: float = 1.0

    def __post_init__(self) -> None:
        if self.prune not in PRUNERS:
            raise ConfigError(f"prune must be one of {PRUNERS}, got {self.prune!r}")
        if self.qat_epochs < 0:
            raise ConfigError(f"qat_epochs must be >= 0, got {self.qat_epochs}")


@register_method("two-stage")
class TwoStage(Method):
    Config = TwoStageConfig
    config: TwoStageConfig
    default_bits = 8

    def __init__(
        self, model: nn.Module, context: MethodContext, config: TwoStageConfig | None = None
    ) -> None:
        super().__init__(model, context, config)
        self.inner = method_class(self.config.prune)(model, context)
        self.needs_training = self.inner.needs_training  # type: ignore[misc]
        self.min_steps = self.inner.min_steps  # type: ignore[misc]
        self.model = self.inner.model
        self.qat_epochs = float(self.config.qat_epochs)

    @property
    def steps(self) -> int:
        return int(getattr(self.inner, "steps", 0))

    @property
    def trace(self) -> list[dict[str, Any]]:
        return list(getattr(self.inner, "trace", []))

    def begin(self, total_steps: int) -> None:
        self.inner.begin(total_steps)

    def penalty(self) -> torch.Tensor:
        return self.inner.penalty()

    def step(self, loss: float | None = None) -> None:
        self.inner.step(loss)

    def status(self) -> dict[str, float]:
        return self.inner.status()

    def read_off(self) -> Assignment:
        return self.inner.read_off()

    def weights_for_export(self, assignment: Assignment | None) -> nn.Module:
        return self.inner.weights_for_export(assignment)
