"""Fold every BatchNorm that directly follows a convolution into it (eval statistics), before QAT.

Quantizing the folded weight is what an int8 runtime executes, so training the folded layer trains
the model that is deployed. The conv -> BN pairs come from the torch.export graph (a conv whose only
user is a batch norm), so residual and concat models are handled without knowing their code.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netdiet.graph.capture import eval_mode, normalize_inputs

_CONV = ("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.convolution")
_BN = ("aten.batch_norm", "aten._native_batch_norm_legit_no_training", "aten.native_batch_norm")


def _module_path(node: Any) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    # torch.export prefixes the root as "L['self']" in some versions; keep the dotted module path
    return str(path).replace("L['self'].", "").replace("L__self___", "")


def conv_bn_pairs(model: nn.Module, example_inputs: Any) -> list[tuple[str, str]]:
    """(conv path, bn path) for every BN whose input is a conv output used by nothing else."""
    inputs = normalize_inputs(example_inputs)
    with eval_mode(model), torch.no_grad():
        program = torch.export.export(model, inputs.args, inputs.kwargs, strict=False)
    pairs = []
    for node in program.graph.nodes:
        name = str(node.target).split(".default")[0]
        if node.op != "call_function" or not name.startswith(_BN):
            continue
        src = node.args[0]
        if getattr(src, "op", None) != "call_function" or not str(src.target).startswith(_CONV):
            continue
        if len(src.users) != 1:
            continue
        conv, bn = _module_path(src), _module_path(node)
        if conv is None or bn is None:
            continue
        pairs.append((conv, bn))
    return pairs


class ChannelScale(nn.Module):
    """Weight parametrization w -> w * scale (per output channel): a BN folded with frozen statistics.

    Training the folded weight directly multiplies the effective learning rate of a channel by
    1 / (gamma / std)^2 against the BN model; on ResNet-20 that diverged even at a tenth of the fine-tune
    lr. Keeping the unfolded weight as the trained tensor and the fold as this fixed scale trains like
    the BN model in eval mode, while the forward pass (and every quantizer after it) sees the folded
    weight the int8 runtime executes."""

    scale: torch.Tensor

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.scale.reshape(-1, *([1] * (weight.dim() - 1)))


def fold_batchnorm(
    model: nn.Module, example_inputs: Any, *, keep_scale: bool = False
) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A copy of `model` with each conv -> BN pair folded (the BN replaced by Identity); the pairs.

    `keep_scale`: the conv keeps its unfolded weight under a `ChannelScale` parametrization (what
    quantization-aware training wants); otherwise the scale is multiplied into the weight."""
    out = copy.deepcopy(model)
    folded = []
    for conv_path, bn_path in conv_bn_pairs(model, example_inputs):
        conv, bn = out.get_submodule(conv_path), out.get_submodule(bn_path)
        if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or not isinstance(
            bn, nn.modules.batchnorm._BatchNorm
        ):
            continue
        if bn.running_mean is None or bn.running_var is None:
            continue
        with torch.no_grad():
            std = torch.sqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
            beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
            k = gamma / std
            bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
            new_bias = beta + (bias - bn.running_mean) * k
            conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))
            if not keep_scale:
                conv.weight.mul_(k.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        if keep_scale:
            parametrize.register_parametrization(conv, "weight", ChannelScale(k.to(conv.weight.dtype)))
        parent, _, name = bn_path.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, name, nn.Identity())
        folded.append((conv_path, bn_path))
    return out, folded
