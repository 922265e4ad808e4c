"""Where an int8 runtime needs an output quantizer: read from the torch.export graph, not the model's code.

ONNX Runtime runs a conv or a matmul as an int8 kernel (QLinearConv, QGemm) only when its input, its
weight *and its output* pass through quantize/dequantize pairs. A layer whose output goes (directly or
through a ReLU, which the runtime folds into the quantize step) only into other quantized layers gets
its output grid from their input quantizers. Every other quantized layer - a conv feeding a residual
add, a concat, a pooling - needs its own output quantizer, or it runs in float. The model's final
outputs are never quantized: nothing faster reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from netdiet.graph.capture import eval_mode, normalize_inputs
from netdiet.quant.fold import _module_path

_LAYER_OPS = ("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.convolution", "aten.linear")
_PASS_THROUGH = ("aten.relu", "aten.relu_")  # folded into the next quantize step by the runtime


def _name(node: Any) -> str:
    return str(node.target).split(".default")[0]


def _is_layer(node: Any, quantized: set[str]) -> bool:
    return (
        getattr(node, "op", None) == "call_function"
        and _name(node).startswith(_LAYER_OPS)
        and _module_path(node) in quantized
    )


def _feeds_only_quantized_inputs(node: Any, quantized: set[str]) -> bool:
    users = list(node.users)
    if not users:
        return False
    for user in users:
        if user.op == "output":
            return False
        if user.op == "call_function" and _name(user) in _PASS_THROUGH:
            if not _feeds_only_quantized_inputs(user, quantized):
                return False
            continue
        if not (_is_layer(user, quantized) and user.args and user.args[0] is node):
            return False
    return True


def output_quantizer_sites(model: nn.Module, example_inputs: Any, quantized: Iterable[str]) -> list[str]:
    """The quantized layers (module paths) whose outputs need their own quantizer for int8 kernels."""
    quantized = set(quantized)
    inputs = normalize_inputs(example_inputs)
    with eval_mode(model), torch.no_grad():
        program = torch.export.export(model, inputs.args, inputs.kwargs, strict=False)
    sites: list[str] = []
    for node in program.graph.nodes:
        if not _is_layer(node, quantized):
            continue
        path = _module_path(node)
        if path is None or path in sites:
            continue
        if any(u.op == "output" for u in node.users):
            continue  # a model output: keep it float
        if not _feeds_only_quantized_inputs(node, quantized):
            sites.append(path)
    return sites
