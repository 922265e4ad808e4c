"""Factorised export: replace a Linear/Conv by two smaller layers where a low rank lowers the cost.

Linear(in, out) at rank r -> Sequential(Linear(in, r, bias=False), Linear(r, out)).
ConvNd(in, out, k) at rank r -> Sequential(ConvNd(in, r, k, stride, padding, dilation, bias=False),
ConvNd(r, out, 1)). The factors come from the SVD of the layer's weight, so a weight whose rank is at
most r (as it is after low-rank training folds its gates) is reproduced to rounding error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from netdiet.errors import ConfigError


def _svd_factors(w2d: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(w2d.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(w2d.dtype), (root[:, None] * vh[:rank]).to(w2d.dtype)


def factorized_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    first = nn.Linear(
        layer.in_features, rank, bias=False, device=layer.weight.device, dtype=layer.weight.dtype
    )
    second = nn.Linear(
        rank,
        layer.out_features,
        bias=layer.bias is not None,
        device=layer.weight.device,
        dtype=layer.weight.dtype,
    )
    if layer.weight.device.type != "meta":
        with torch.no_grad():
            u, v = _svd_factors(layer.weight.detach(), rank)
            first.weight.copy_(v)
            second.weight.copy_(u)
            if layer.bias is not None and second.bias is not None:
                second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def factorized_conv(layer: nn.modules.conv._ConvNd, rank: int) -> nn.Sequential:
    if layer.groups != 1 or layer.transposed:
        raise ConfigError("only ungrouped, non-transposed convolutions can be factorised")
    conv: Any = type(layer)
    kw: dict[str, Any] = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    first = conv(
        layer.in_channels,
        rank,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        bias=False,
        padding_mode=layer.padding_mode,
        **kw,
    )
    second = conv(rank, layer.out_channels, 1, bias=layer.bias is not None, **kw)
    if layer.weight.device.type != "meta":
        with torch.no_grad():
            w = layer.weight.detach()
            u, v = _svd_factors(w.reshape(w.shape[0], -1), rank)
            first.weight.copy_(v.reshape(rank, *w.shape[1:]))
            second.weight.copy_(u.reshape(w.shape[0], rank, *([1] * (w.dim() - 2))))
            if layer.bias is not None and second.bias is not None:
                second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def factorize(model: nn.Module, ranks: Mapping[str, int]) -> nn.Module:
    """Replace, in place, each module at path -> rank by its factorised form. Returns `model`."""
    for path, rank in ranks.items():
        module = model.get_submodule(path)
        if isinstance(module, nn.Linear):
            new = factorized_linear(module, int(rank))
        elif isinstance(module, nn.modules.conv._ConvNd):
            new = factorized_conv(module, int(rank))
        else:
            raise ConfigError(f"cannot factorise '{path}' ({type(module).__name__}); only Linear and ConvNd")
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, new)
    return model


def pays(out_features: int, rest: int, rank: int) -> bool:
    """Whether rank r is cheaper than dense for a [out, rest] weight (FLOPs and params alike)."""
    return rank * (out_features + rest) < out_features * rest
