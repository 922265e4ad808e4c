"""`ptq`: post-training quantization. Keeps every channel; the caller's bit width (default 8) goes on
every conv and linear, ranges are calibrated on real batches at export, nothing is trained.

It is the one-call int8 model and the baseline learned bit allocations must beat. Followed by a
fine-tune (`compress(..., finetune_epochs=N)`) it is quantization-aware training of the dense model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from netdiet.errors import ConfigError
from netdiet.methods.base import Method, NoOptions
from netdiet.methods.context import MethodContext
from netdiet.methods.registry import register_method
from netdiet.space import Assignment


@dataclass
class PTQConfig(NoOptions):
    """No options: the bit width is the caller's `bits` (8 unless given)."""


@register_method("ptq")
class PTQ(Method):
    Config = PTQConfig
    default_bits = 8
    default_finetune_epochs = 0.0

    def __init__(self, model: nn.Module, context: MethodContext, config: PTQConfig | None = None) -> None:
        super().__init__(model, context, config)
        if not any(int(v) < 32 for v in context.fixed.values()):
            raise ConfigError(
                "method 'ptq' quantizes: give it bits below 32 (bits=8), or use a pruning method"
            )
        if self.dense > self.target:
            raise ConfigError(
                f"method 'ptq' keeps every channel, and quantized the model's {self.metric} is {self.dense:.4g} "
                f"({self.dense / context.reference():.1%} of fp32), above the budget {self.target:.4g}: use a "
                "pruning method with the same bits (e.g. method='l1l2', bits=8) or raise the budget"
            )

    def read_off(self) -> Assignment:
        return Assignment()
