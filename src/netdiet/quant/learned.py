"""Learned-bit quantizers hung on a model for training (geta, l1l2 with bits): one per conv/linear
weight (a parametrization, signed, per tensor) and one per layer input (a pre-hook; ranges observed on
the first batches, then quantized, unsigned unless negative inputs were seen).

The methods own the schedule (projection of the bit bounds, freezing); this module only attaches the
quantizers and reads their bit widths.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netdiet.quant.quantizers import LearnedBitQuantizer

INPUT_ATTR = "learned_input_quantizer"


class ObservingInputQuantizer(nn.Module):
    """A layer's input quantizer: observes ranges (99.9th percentile of |x|) until `activate`, then
    quantizes."""

    def __init__(self, init_bits: float) -> None:
        super().__init__()
        self.q = LearnedBitQuantizer(init_bits=float(init_bits), signed=False)
        self.observed: list[float] = []
        self.negative = False
        self.active = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            with torch.no_grad():
                flat = x.detach().float().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 100_000)]
                self.observed.append(float(torch.quantile(sample.abs(), 0.999)))
                self.negative = self.negative or bool((sample < 0).any())
            return x
        return self.q(x)

    @torch.no_grad()
    def activate(self, bits: float) -> None:
        high = max(sum(self.observed) / max(1, len(self.observed)), 1e-6)
        self.q.signed = self.negative
        self.q.init_from(torch.tensor([high]), bits)
        self.active = True

    def state(self) -> tuple[list[float], bool, bool, bool]:
        return list(self.observed), self.negative, self.active, self.q.signed

    def load(self, state: Any) -> None:
        observed, negative, active, signed = state
        self.observed, self.negative, self.active, self.q.signed = list(observed), negative, active, signed


def _input_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    quantizer = getattr(module, INPUT_ATTR, None)
    if quantizer is None or not args:
        return args
    return (quantizer(args[0]), *args[1:])


def _owner(model: nn.Module, param: str) -> tuple[nn.Module, str]:
    path, _, attr = param.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def attach_learned_bits(
    model: nn.Module, weights: Iterable[str], inputs: Iterable[str], init_bits: float
) -> tuple[dict[str, LearnedBitQuantizer], dict[str, ObservingInputQuantizer]]:
    """In place: a learned-bit quantizer on every weight in `weights` (parameter names; range from the
    weight's max |w|) and on the input of every layer in `inputs` (module paths). Returns both maps."""
    weight_q: dict[str, LearnedBitQuantizer] = {}
    for param in weights:
        module, attr = _owner(model, param)
        q = LearnedBitQuantizer(init_bits=float(init_bits), signed=True)
        q.init_from(getattr(module, attr).detach().abs().max().reshape(1))
        parametrize.register_parametrization(module, attr, q)
        weight_q[param] = q
    input_q: dict[str, ObservingInputQuantizer] = {}
    for layer in inputs:
        module = model.get_submodule(layer) if layer else model
        setattr(module, INPUT_ATTR, ObservingInputQuantizer(init_bits))
        module.register_forward_pre_hook(_input_hook)
        input_q[layer] = getattr(module, INPUT_ATTR)
    return weight_q, input_q


def float_tensor(model: nn.Module, param: str) -> torch.Tensor | None:
    """The trained float tensor behind `param`: the parametrization's original where one is attached
    (quantizer, gate), else the parameter itself; None for buffers."""
    module, attr = _owner(model, param)
    if parametrize.is_parametrized(module, attr):
        plist: Any = module.parametrizations
        return plist[attr].original
    value = getattr(module, attr, None)
    return value if isinstance(value, nn.Parameter) else None


def check_bit_bounds(name: str, bounds: tuple[int, int]) -> None:
    """A (b_min, b_max) pair a learned-bit quantizer can be projected into."""
    from netdiet.errors import ConfigError

    low, high = bounds
    if not 2 <= low <= high <= 16:
        raise ConfigError(f"{name} must be (b_min, b_max) with 2 <= b_min <= b_max <= 16, got {(low, high)}")
