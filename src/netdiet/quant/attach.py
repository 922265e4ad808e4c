"""Hang quantizers on conv/linear layers: a weight parametrization, an input pre-hook, an output hook.

All are leaf modules under the layer (`layer.parametrizations.weight[0]`, `layer.input_quantizer`,
`layer.output_quantizer`), so `named_parameters()` trains their steps with the weights and a state dict
carries them. 32 bits on a side means no quantizer there. An output quantizer goes only where an int8
runtime needs one to run the layer as an int8 kernel and no quantized layer reads the output (a conv
feeding a residual add; see `netdiet.quant.placement`). `strip_quantizers` takes them off again (float weights back, the learned
scales returned) in a float copy for export.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netdiet.errors import ConfigError
from netdiet.quant.fold import ChannelScale
from netdiet.quant.quantizers import LSQQuantizer

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class QuantizedLayer:
    """What the export needs of one quantized layer: bits, per-channel weight scales, input scale and
    zero point (None where that side is not quantized)."""

    path: str
    weight_bits: int
    act_bits: int
    weight_scale: torch.Tensor | None
    input_scale: float | None
    input_zero_point: int | None
    output_scale: float | None = None
    output_zero_point: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"weight_bits": self.weight_bits, "act_bits": self.act_bits}


def _quantize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    quantizer = getattr(module, "input_quantizer", None)
    if quantizer is None:
        return args
    return (quantizer(args[0]), *args[1:])


def _quantize_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    quantizer = getattr(module, "output_quantizer", None)
    if quantizer is None or not isinstance(output, torch.Tensor):
        return output
    return quantizer(output)


@torch.no_grad()
def _init_weight(q: LSQQuantizer, w: torch.Tensor) -> None:
    """Per-channel step minimising the quantization MSE of the weight over shrunk max-abs ranges."""
    flat = w.detach().float().reshape(w.shape[0], -1)
    top = flat.abs().amax(dim=1).clamp_min(1e-8)
    best = top.clone()
    best_err = torch.full_like(top, float("inf"))
    for frac in torch.linspace(0.5, 1.0, 26).tolist():
        step = (top * frac / q.qmax)[:, None]
        err = ((torch.clamp(torch.round(flat / step), q.qmin, q.qmax) * step - flat) ** 2).mean(dim=1)
        better = err < best_err
        best = torch.where(better, top * frac, best)
        best_err = torch.where(better, err, best_err)
    q.init_from(w, -best, best)


def attach_quantizers(
    model: nn.Module, layers: Mapping[str, tuple[int, int]], outputs: Iterable[str] = ()
) -> nn.Module:
    """In place: for each module path -> (weight bits, activation bits), fake-quantize the layer's weight
    (signed, per output channel, step set from the weight) and its input (unsigned per tensor, range set
    later by `calibrate_activations`); for the paths in `outputs`, also its output at the activation
    bits. Returns `model`."""
    outputs = set(outputs)
    unknown = sorted(outputs - set(layers))
    if unknown:
        raise ConfigError(f"output quantizers asked for layers that are not quantized: {unknown[:5]}")
    for path, (w_bits, a_bits) in layers.items():
        module = model.get_submodule(path) if path else model
        if not isinstance(module, QUANTIZABLE):
            raise ConfigError(
                f"'{path}' is a {type(module).__name__}; only Conv1d/2d/3d and Linear are quantized"
            )
        if parametrize.is_parametrized(module, "weight") and not _only_fold_scales(module):
            raise ConfigError(
                f"'{path}' already has a weight parametrization (quantized or gated); strip it first"
            )
        if int(w_bits) < 32:
            wq = LSQQuantizer(int(w_bits), signed=True, channels=module.weight.shape[0], axis=0)
            _init_weight(wq, module.weight)
            parametrize.register_parametrization(module, "weight", wq)
        if int(a_bits) < 32:
            module.input_quantizer = LSQQuantizer(int(a_bits), signed=False)
            if not getattr(module, "netdiet_input_hook", False):  # one hook for a layer's lifetime
                module.register_forward_pre_hook(_quantize_input)
                module.__dict__["netdiet_input_hook"] = True
        if path in outputs and int(a_bits) < 32:
            module.output_quantizer = LSQQuantizer(int(a_bits), signed=False)
            if not getattr(module, "netdiet_output_hook", False):
                module.register_forward_hook(_quantize_output)
                module.__dict__["netdiet_output_hook"] = True
    return model


def _only_fold_scales(module: Any) -> bool:
    plist: Any = module.parametrizations
    return all(isinstance(p, ChannelScale) for p in plist["weight"])


def _float_weight(module: Any) -> torch.Tensor:
    """The layer's float weight: its parametrizations applied except the quantizers (a folded BN's scale
    stays in)."""
    if not parametrize.is_parametrized(module, "weight"):
        return module.weight
    plist: Any = module.parametrizations
    weight = plist["weight"].original
    for p in plist["weight"]:
        if not isinstance(p, LSQQuantizer):
            weight = p(weight)
    return weight


def _weight_quantizer(module: Any) -> LSQQuantizer | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    plist: Any = module.parametrizations
    found = [p for p in plist["weight"] if isinstance(p, LSQQuantizer)]
    return found[0] if found else None


def input_quantizers(model: nn.Module) -> dict[str, tuple[nn.Module, LSQQuantizer]]:
    return {
        path: (m, m.input_quantizer)
        for path, m in model.named_modules()
        if isinstance(getattr(m, "input_quantizer", None), LSQQuantizer)
    }


def output_quantizers(model: nn.Module) -> dict[str, tuple[nn.Module, LSQQuantizer]]:
    return {
        path: (m, m.output_quantizer)
        for path, m in model.named_modules()
        if isinstance(getattr(m, "output_quantizer", None), LSQQuantizer)
    }


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLayer]:
    """Every quantized layer of `model` with its bits and current scales."""
    out: dict[str, QuantizedLayer] = {}
    for path, module in model.named_modules():
        if not isinstance(module, QUANTIZABLE):
            continue
        wq = _weight_quantizer(module)
        aq: Any = getattr(module, "input_quantizer", None)
        oq: Any = getattr(module, "output_quantizer", None)
        if wq is None and not isinstance(aq, LSQQuantizer):
            continue
        out[path] = QuantizedLayer(
            path,
            wq.bits if wq is not None else 32,
            aq.bits if isinstance(aq, LSQQuantizer) else 32,
            wq.scale().clone() if wq is not None else None,
            float(aq.scale()) if isinstance(aq, LSQQuantizer) else None,
            int(aq.zero_point) if isinstance(aq, LSQQuantizer) else None,
            float(oq.scale()) if isinstance(oq, LSQQuantizer) else None,
            int(oq.zero_point) if isinstance(oq, LSQQuantizer) else None,
        )
    return out


def _plain_layer(module: Any) -> nn.Module:
    """A fresh, unparametrized layer of the same kind holding the float weight and bias."""
    weight = _float_weight(module)
    bias = module.bias
    new: Any
    if isinstance(module, nn.Linear):
        new = nn.Linear(module.in_features, module.out_features, bias=bias is not None)
    else:
        assert isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        cls: Any = next(c for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d) if isinstance(module, c))
        new = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=bias is not None,
            padding_mode=module.padding_mode,
        )
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.train(module.training)
    return new


def strip_quantizers(model: nn.Module) -> tuple[nn.Module, dict[str, QuantizedLayer]]:
    """A float copy of `model` without quantizers, and what they had learned. `model` is unchanged.

    The copy's quantized layers are rebuilt rather than un-parametrized: torch shares a parametrized
    module's class with its deep copies, so removing a parametrization from a copy would break the
    original."""
    layers = quantized_layers(model)
    plain = copy.deepcopy(model)
    for path in layers:
        module = plain.get_submodule(path) if path else plain
        new = _plain_layer(module)
        if not path:
            return new, layers
        parent, _, name = path.rpartition(".")
        setattr(plain.get_submodule(parent) if parent else plain, name, new)
    return plain, layers
