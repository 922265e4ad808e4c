"""What was quantized, as JSON: the bits per layer, the layers with output quantizers, the folded BNs.

A saved quantized model is rebuilt from its plan (structure) and its safetensors (weights, learned
steps and zero points): `apply_plan` replays the structural part of `prepare_quantized` - BN folded
away, quantizers attached - without touching any number, and the saved state then fills it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netdiet.errors import ConfigError
from netdiet.quant.attach import attach_quantizers
from netdiet.quant.fold import ChannelScale

PLAN_FORMAT = "netdiet.quant-plan/1"


@dataclass
class QuantPlan:
    bits: dict[str, tuple[int, int]]  # module path -> (weight bits, activation bits)
    outputs: list[str] = field(default_factory=list)  # layers with an output quantizer
    folded: list[tuple[str, str]] = field(default_factory=list)  # (conv, bn) folded before quantizing

    def __post_init__(self) -> None:
        for path, pair in self.bits.items():
            w, a = (int(v) for v in pair)
            if not (2 <= w <= 32 and 2 <= a <= 32):
                raise ConfigError(f"quant plan: bits of '{path}' must be in [2, 32], got {pair}")
            self.bits[path] = (w, a)
        unknown = sorted(set(self.outputs) - set(self.bits))
        if unknown:
            raise ConfigError(
                f"quant plan: output quantizers on layers that are not quantized: {unknown[:5]}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "bits": {p: list(b) for p, b in sorted(self.bits.items())},
            "outputs": list(self.outputs),
            "folded": [list(pair) for pair in self.folded],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuantPlan:
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ConfigError(f"not a netdiet quant plan (expected format '{PLAN_FORMAT}')")
        return cls(
            bits={str(p): (int(b[0]), int(b[1])) for p, b in data["bits"].items()},
            outputs=[str(p) for p in data.get("outputs", [])],
            folded=[(str(c), str(b)) for c, b in data.get("folded", [])],
        )


def apply_plan(model: nn.Module, plan: QuantPlan) -> nn.Module:
    """In place: the structure of the quantized model (BNs of `plan.folded` replaced by Identity, a bias
    on their convs, quantizers attached). The numbers come from a state dict loaded afterwards."""
    for conv_path, bn_path in plan.folded:
        try:
            conv = model.get_submodule(conv_path)
            model.get_submodule(bn_path)
        except AttributeError as exc:
            raise ConfigError(
                f"quant plan folds '{bn_path}' into '{conv_path}', which the model lacks"
            ) from exc
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.weight.shape[0], dtype=conv.weight.dtype))
        weight = conv.weight
        assert isinstance(weight, torch.Tensor)
        parametrize.register_parametrization(conv, "weight", ChannelScale(torch.ones(weight.shape[0])))
        parent, _, name = bn_path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, name, nn.Identity())
    attach_quantizers(model, plan.bits, outputs=plan.outputs)
    return model
