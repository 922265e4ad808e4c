"""Quantized weights stored as their integer codes: two 4-bit codes per byte, one byte up to 8 bits.

A fake-quantized layer's weight is `codes x step` on a signed grid; only the codes and the steps need
storing. `pack_weights` replaces each quantized layer's latent float weight in a state dict by its packed
codes and returns the bit manifest that `unpack_weights` needs to put a weight back that quantizes to
exactly the same values (the latent weight itself, a training-time quantity, is not kept).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netdiet.errors import ConfigError
from netdiet.quant.attach import quantized_layers
from netdiet.quant.fold import ChannelScale
from netdiet.quant.quantizers import LSQQuantizer

MANIFEST_FORMAT = "netdiet.packed-weights/1"


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed integer codes in [-(2^(b-1) - 1), 2^(b-1) - 1] as a flat uint8 tensor (4 bits: 2 per byte)."""
    flat = codes.reshape(-1).to(torch.int16)
    top = 2 ** (bits - 1) - 1
    if flat.numel() and (int(flat.min()) < -top or int(flat.max()) > top):
        raise ConfigError(f"codes outside the signed {bits}-bit grid [-{top}, {top}]")
    if bits <= 4:
        unsigned = (flat + 8).to(torch.uint8)  # 1..15
        if unsigned.numel() % 2:
            unsigned = torch.cat([unsigned, torch.zeros(1, dtype=torch.uint8)])
        return unsigned[0::2] | (unsigned[1::2] << 4)
    return flat.to(torch.int8).view(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The inverse of `pack_codes`: `numel` signed codes as int16."""
    if bits <= 4:
        low = (packed & 0x0F).to(torch.int16) - 8
        high = (packed >> 4).to(torch.int16) - 8
        return torch.stack([low, high], dim=1).reshape(-1)[:numel]
    return packed.view(torch.int8).to(torch.int16)[:numel]


def _chain(module: Any) -> tuple[list[Any], LSQQuantizer]:
    plist: Any = module.parametrizations["weight"]
    quantizer = next(p for p in plist if isinstance(p, LSQQuantizer))
    return list(plist), quantizer


def pack_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """In `state` (the model's state dict), each weight-quantized layer's latent float weight becomes its
    packed codes; returns the manifest (param key -> bits, shape, packed key)."""
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "weights": {}}
    for path, layer in quantized_layers(model).items():
        if layer.weight_scale is None:
            continue
        module = model.get_submodule(path) if path else model
        chain, quantizer = _chain(module)
        weight: torch.Tensor = module.parametrizations["weight"].original  # type: ignore[union-attr,index]
        with torch.no_grad():
            for p in chain:
                if isinstance(p, LSQQuantizer):
                    break
                weight = p(weight)
            step = quantizer.scale().reshape(-1, *([1] * (weight.dim() - 1)))
            codes = torch.clamp(torch.round(weight / step), quantizer.qmin, quantizer.qmax)
        key = f"{path}.parametrizations.weight.original" if path else "parametrizations.weight.original"
        packed_key = f"{path}.weight.packed" if path else "weight.packed"
        del state[key]
        state[packed_key] = pack_codes(codes, quantizer.bits)
        manifest["weights"][key] = {"bits": quantizer.bits, "shape": list(weight.shape), "packed": packed_key}
    return manifest


def unpack_weights(model: nn.Module, state: dict[str, torch.Tensor], manifest: dict[str, Any]) -> None:
    """In place on `state`: each packed entry of `manifest` back to a latent weight for `model` (built by
    `apply_plan`) that quantizes to the stored codes."""
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"not a netdiet packed-weights manifest (expected format '{MANIFEST_FORMAT}')")
    for key, entry in manifest["weights"].items():
        path = key[: -len(".parametrizations.weight.original")] if "." in key else ""
        module = model.get_submodule(path) if path else model
        if not parametrize.is_parametrized(module, "weight"):
            raise ConfigError(f"packed weight '{key}' belongs to a layer the rebuilt model does not quantize")
        chain, quantizer = _chain(module)
        prefix = f"{path}.parametrizations.weight" if path else "parametrizations.weight"
        index = chain.index(quantizer)
        step = state[f"{prefix}.{index}.step"].detach().abs().clamp_min(1e-8)
        shape = [int(s) for s in entry["shape"]]
        numel = 1
        for s in shape:
            numel *= s
        codes = unpack_codes(state.pop(entry["packed"]), int(entry["bits"]), numel).reshape(shape)
        weight = codes.to(step.dtype) * step.reshape(-1, *([1] * (len(shape) - 1)))
        for i, p in enumerate(chain[:index]):  # undo the fold scales in front of the quantizer
            if isinstance(p, ChannelScale):
                scale = state[f"{prefix}.{i}.scale"]
                weight = weight / scale.reshape(-1, *([1] * (len(shape) - 1)))
            else:
                raise ConfigError(f"cannot unpack '{key}': an unknown parametrization precedes its quantizer")
        state[key] = weight
