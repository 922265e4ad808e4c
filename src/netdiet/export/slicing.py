"""Copy a model and shrink its parameters and buffers to the kept positions of every dimension."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy that leaves the user's model untouched (meta-device weights stay on meta)."""
    return copy.deepcopy(model)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def slice_tensors(
    model: nn.Module,
    kept: Mapping[str, list[torch.Tensor | None]],
    aliases: Mapping[str, list[str]],
) -> None:
    """Replace every parameter/buffer of `model` (a copy) by its slice; tied names get the same tensor."""
    done: set[str] = set()
    with torch.no_grad():
        for name, dims in kept.items():
            if name in done or all(d is None for d in dims):
                continue
            module, attr = _owner(model, name)
            old = getattr(module, attr)
            new = old
            for dim, idx in enumerate(dims):
                if idx is not None:
                    new = (
                        new.index_select(dim, idx.to(new.device))
                        if new.device.type != "meta"
                        else _meta_slice(new, dim, idx.numel())
                    )
            new = new.contiguous() if new.device.type != "meta" else new
            replacement: torch.Tensor
            if isinstance(old, nn.Parameter):
                replacement = nn.Parameter(new, requires_grad=old.requires_grad)
            else:
                replacement = new
            for alias in aliases.get(name, [name]):
                owner, a = _owner(model, alias)
                if isinstance(replacement, nn.Parameter):
                    owner._parameters[a] = replacement
                else:
                    owner._buffers[a] = replacement
                done.add(alias)


def _meta_slice(t: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] = n
    return torch.empty(shape, dtype=t.dtype, device="meta")


def zero_dropped(
    model: nn.Module,
    kept: Mapping[str, list[torch.Tensor | None]],
) -> None:
    """Zero (in the copy) every slice of a parameter that belongs to a dropped unit."""
    with torch.no_grad():
        for name, dims in kept.items():
            module, attr = _owner(model, name)
            tensor = getattr(module, attr)
            if tensor is None or tensor.device.type == "meta" or not tensor.is_floating_point():
                continue
            if name.endswith(("running_var",)):
                continue  # stays positive; gamma = beta = 0 already silences the channel
            for dim, idx in enumerate(dims):
                if idx is None:
                    continue
                keep_mask = torch.zeros(tensor.shape[dim], dtype=torch.bool)
                keep_mask[idx] = True
                dropped = torch.nonzero(~keep_mask).flatten().to(tensor.device)
                tensor.index_fill_(dim, dropped, 0.0)
