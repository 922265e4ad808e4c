"""One-layer ONNX graphs for the onnxruntime backend, in fp32 and in int8, built with onnx.helper.

fp32: Conv/ConvTranspose + Relu (ORT fuses the pair, as in exported models), Gemm for a linear layer on
one token, MatMul + Add on several.

int8: the layer as it runs inside an int8 QDQ export, where the previous layer already hands over uint8
codes: uint8 input -> DequantizeLinear -> Conv/Gemm/MatMul with an int8 per-channel weight (and an int32
bias at input scale x weight scale, which ORT's QDQ fusion requires) -> Relu -> QuantizeLinear -> uint8,
convs with channels-last inputs and outputs (see `onnx_layer_int8`).
ONNX Runtime fuses that into QLinearConv / QGemm / QLinearMatMul; `ort_kernels` reads back which ops the
optimised graph runs, so a table records what was timed instead of assuming it. Timing the fused kernel
between uint8 tensors leaves out the float Q/DQ at the graph's edges, which the end-to-end calibration
of the int8 precision absorbs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from netdiet.cost.latency.signature import LayerSignature

OPSET = 17


def _conv_attrs(
    sig: LayerSignature, c_in: int, c_out: int
) -> tuple[str, dict[str, Any], tuple[int, ...], int]:
    """ONNX op, attributes, weight shape and the (possibly depthwise) output channel count."""
    attrs: dict[str, Any] = {
        "kernel_shape": list(sig.kernel),
        "strides": list(sig.stride),
        "pads": list(sig.padding) * 2,
        "dilations": list(sig.dilation),
    }
    if sig.op == "convT":
        attrs["group"] = sig.groups
        return "ConvTranspose", attrs, (c_in, c_out // sig.groups, *sig.kernel), c_out
    groups = c_in if sig.op == "dwconv" else sig.groups
    c_out = c_in if sig.op == "dwconv" else c_out
    attrs["group"] = groups
    return "Conv", attrs, (c_out, c_in // groups, *sig.kernel), c_out


def _input_shape(sig: LayerSignature, batch: int, c_in: int) -> tuple[int, ...]:
    if sig.op == "linear":
        return (batch, c_in) if sig.tokens == 1 else (batch, sig.tokens, c_in)
    return (batch, c_in, *sig.in_spatial)


def _finish(nodes: list[Any], inits: list[Any], shape: tuple[int, ...], elem: int) -> bytes:
    from onnx import helper

    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", elem, list(shape))],
        [helper.make_tensor_value_info("y", elem, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model.SerializeToString()


def onnx_layer(sig: LayerSignature, batch: int, c_in: int, c_out: int) -> tuple[bytes, tuple[int, ...]]:
    """A one-layer fp32 ONNX model (serialised) and its input shape, weights random."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple[int, ...]) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    shape = _input_shape(sig, batch, c_in)
    if sig.op == "linear":
        if sig.tokens == 1:
            nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
            inits = [init("w", (c_out, c_in)), init("b", (c_out,))]
        else:
            nodes = [
                helper.make_node("MatMul", ["x", "w"], ["h"]),
                helper.make_node("Add", ["h", "b"], ["y"]),
            ]
            inits = [init("w", (c_in, c_out)), init("b", (c_out,))]
    else:
        op, attrs, w_shape, c_out = _conv_attrs(sig, c_in, c_out)
        nodes = [
            helper.make_node(op, ["x", "w", "b"], ["h"], **attrs),
            helper.make_node("Relu", ["h"], ["y"]),
        ]
        inits = [init("w", w_shape), init("b", (c_out,))]
    return _finish(nodes, inits, shape, TensorProto.FLOAT), shape


def onnx_layer_int8(sig: LayerSignature, batch: int, c_in: int, c_out: int) -> tuple[bytes, tuple[int, ...]]:
    """A one-layer int8 QDQ ONNX model (uint8 in, uint8 out; see the module docstring) and its input
    shape, weights random."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits: list[Any] = []

    def add(name: str, array: np.ndarray) -> None:
        inits.append(numpy_helper.from_array(array, name))

    x_scale = np.float32(0.02)
    add("x_scale", np.array(x_scale, np.float32))
    add("x_zero", np.array(128, np.uint8))
    add("y_scale", np.array(0.05, np.float32))
    add("y_zero", np.array(0, np.uint8))
    shape = _input_shape(sig, batch, c_in)
    if sig.op == "linear":
        matmul = sig.tokens > 1
        w_shape: tuple[int, ...] = (c_in, c_out) if matmul else (c_out, c_in)
        axis = 1 if matmul else 0
        if matmul:  # ORT's QLinearMatMul takes no bias; a bias Add stays float beside it in exports too
            layer = helper.make_node("MatMul", ["x_dq", "w_dq"], ["h"])
        else:
            layer = helper.make_node("Gemm", ["x_dq", "w_dq", "b_dq"], ["h"], transB=1)
        has_bias, relu = not matmul, False
    else:
        op, attrs, w_shape, c_out = _conv_attrs(sig, c_in, c_out)
        axis = 1 if op == "ConvTranspose" else 0
        layer = helper.make_node(op, ["x_dq", "w_dq", "b_dq"], ["h"], **attrs)
        has_bias, relu = True, True
    # per output channel, except a transposed conv (its weight's output axis is per group): per tensor
    channels = 1 if sig.op == "convT" else w_shape[axis]
    w_scale = (np.abs(rng.standard_normal(channels)) * 0.01 + 0.001).astype(np.float32)
    add("w", rng.integers(-127, 128, w_shape).astype(np.int8))
    if sig.op == "convT":
        add("w_scale", np.array(w_scale[0], np.float32))
        add("w_zero", np.array(0, np.int8))
        w_dq = helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["w_dq"])
    else:
        add("w_scale", w_scale)
        add("w_zero", np.zeros(channels, np.int8))
        w_dq = helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["w_dq"], axis=axis)
    nodes = [helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zero"], ["x_dq"]), w_dq]
    if has_bias:
        add("b", rng.integers(-1000, 1000, c_out).astype(np.int32))
        add("b_scale", np.resize(w_scale * x_scale, c_out).astype(np.float32))
        add("b_zero", np.zeros(c_out, np.int32))
        nodes.append(helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zero"], ["b_dq"], axis=0))
    nodes.append(layer)
    last = "h"
    if relu:
        nodes.append(helper.make_node("Relu", ["h"], ["r"]))
        last = "r"
    if sig.op == "linear":
        nodes.append(helper.make_node("QuantizeLinear", [last, "y_scale", "y_zero"], ["y"]))
        return _finish(nodes, inits, shape, TensorProto.UINT8), shape
    # channels-last at the edges: inside an int8 graph ORT runs its convs in NHWC and removes the
    # transposes between consecutive ones; alone, a layer in NCHW would time two transposes (measured:
    # 2.49 against 1.38 ms for a 16-channel 3x3 conv at 32x32, batch 64) that the model never runs
    nd = len(sig.kernel)
    to_first = [0, nd + 1, *range(1, nd + 1)]
    to_last = [0, *range(2, nd + 2), 1]
    nodes.insert(0, helper.make_node("Transpose", ["x"], ["x_first"], perm=to_first))
    nodes[1].input[0] = "x_first"
    nodes.append(helper.make_node("QuantizeLinear", [last, "y_scale", "y_zero"], ["y_first"]))
    nodes.append(helper.make_node("Transpose", ["y_first"], ["y"], perm=to_last))
    last_shape = (shape[0], *shape[2:], shape[1])
    return _finish(nodes, inits, last_shape, TensorProto.UINT8), last_shape


def ort_kernels(model: bytes, options: Any) -> list[str]:
    """The op types of the graph ONNX Runtime actually runs for `model` after its optimisations."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "optimized.onnx"
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return [node.op_type for node in onnx.load(str(path)).graph.node]
