"""Static int8 ONNX (QDQ) that carries the learned scales, so ONNX Runtime runs QLinearConv / QGemm.

The fake-quantized model (quantizers from `netdiet.quant`, BN already folded into the convs) is
stripped to float and exported by `to_onnx`; then a quantize/dequantize pair is written at exactly the
points the fake-quant model quantizes - each layer's input (uint8, learned scale and zero point), its
weight (int8 per channel, the learned steps), its bias (int32 at input scale x weight scale) and its
output where it has an output quantizer - and nowhere else. ONNX Runtime's own quantizer would add
points the PyTorch model never trained with (residual adds, calibrated by min/max) and move the result
away from it; written this way the file computes what was trained, and ONNX Runtime still fuses every
DQ -> Conv -> Q into QLinearConv. The result is checked against the fake-quant model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from netdiet.errors import ConfigError, VerificationError
from netdiet.export.onnx import _require, _tensors, to_onnx
from netdiet.quant import QuantizedLayer, quantized_layers, strip_quantizers

QUANT_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class Int8Export:
    path: Path
    layers: int  # layers exported with learned int8 scales
    qdq_pairs: int  # quantize/dequantize points written (inputs, weights, outputs)
    max_rel_error: float  # ONNX Runtime int8 vs PyTorch fake-quant, over the check batches
    top1_agreement: float | None  # for class logits: fraction of argmax that agree
    int8_kernels: dict[str, int]  # ONNX Runtime's optimised graph: QLinearConv, QGemm, ... counts
    notes: list[str] = field(default_factory=list)


def _batches_as_numpy(
    batches: Iterable[Any], names: Sequence[str], limit: int
) -> list[dict[str, np.ndarray]]:
    out: list[dict[str, np.ndarray]] = []
    for batch in batches:
        if len(out) >= limit:
            break
        inputs = getattr(batch, "inputs", batch)
        tensors = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        out.append({n: t.detach().cpu().numpy() for n, t in zip(names, tensors)})
    if not out:
        raise ConfigError("int8 export needs calibration batches (real inputs); none were given")
    return out


def _init(name: str, array: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(array, name)


def _layer_of(weight: str, layers: dict[str, QuantizedLayer]) -> QuantizedLayer | None:
    path = weight[: -len(".weight")] if weight.endswith(".weight") else None
    return layers.get(path) if path is not None else None


def _qdq(source: str, key: str) -> tuple[list[Any], str]:
    """QuantizeLinear -> DequantizeLinear of `source` with the `{key}_scale` / `{key}_zero` initializers;
    the nodes and the name of the dequantized output."""
    from onnx import helper

    scale, zero = f"{key}_scale", f"{key}_zero"
    return [
        helper.make_node("QuantizeLinear", [source, scale, zero], [f"{key}_q"], name=f"{key}_Q"),
        helper.make_node("DequantizeLinear", [f"{key}_q", scale, zero], [f"{key}_dq"], name=f"{key}_DQ"),
    ], f"{key}_dq"


def insert_qdq(model_proto: Any, layers: dict[str, QuantizedLayer]) -> tuple[int, int, list[str]]:
    """Rewrite `model_proto` in place: quantize/dequantize pairs with the learned scales around every
    quantized layer (input, int8 per-channel weight, int32 bias, output where it has a quantizer).

    Nothing else is quantized, so the ONNX model computes what the fake-quant model computes; ONNX
    Runtime fuses each DQ -> Conv/Gemm -> Q into its int8 kernel. Returns (layers, Q/DQ pairs, notes)."""
    from onnx import helper

    graph = model_proto.graph
    inits = {i.name: i for i in graph.initializer}
    from onnx import numpy_helper

    before: dict[int, list[Any]] = {}
    after: dict[int, list[Any]] = {}
    renames: dict[str, str] = {}
    notes: list[str] = []
    done, pairs = 0, 0
    for index, node in enumerate(graph.node):
        if node.op_type not in QUANT_OPS or len(node.input) < 2:
            continue
        layer = _layer_of(node.input[1], layers)
        if layer is None:
            continue
        weight = node.input[1]
        if layer.weight_scale is None or layer.input_scale is None or weight not in inits:
            notes.append(f"{layer.path}: not a plain int8 x uint8 layer in ONNX; left in float")
            continue
        w = numpy_helper.to_array(inits[weight]).astype(np.float32)
        axis = 1 if node.op_type == "MatMul" else 0
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        scale = layer.weight_scale.float().numpy().astype(np.float32)
        if w.shape[axis] != scale.size:
            notes.append(
                f"{layer.path}: weight axis {axis} has {w.shape[axis]} channels, its quantizer "
                f"{scale.size}; left in float"
            )
            continue
        shape = [1] * w.ndim
        shape[axis] = -1
        top = 2 ** (layer.weight_bits - 1) - 1
        wq = np.clip(np.round(w / scale.reshape(shape)), -top, top).astype(np.int8)
        key = f"{node.name or 'layer'}_{index}"
        new = before.setdefault(index, [])
        s_in = np.array(layer.input_scale, dtype=np.float32)
        z_in = np.array(layer.input_zero_point or 0, dtype=np.uint8)
        graph.initializer.extend(
            [
                _init(f"{weight}_q", wq),
                _init(f"{weight}_scale", scale),
                _init(f"{weight}_zero", np.zeros(scale.size, dtype=np.int8)),
                _init(f"{key}_in_scale", s_in),
                _init(f"{key}_in_zero", z_in),
            ]
        )
        pair, dequantized = _qdq(node.input[0], f"{key}_in")
        new.extend(pair)
        new.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{weight}_q", f"{weight}_scale", f"{weight}_zero"],
                [f"{weight}_dq"],
                name=f"{key}_w_DQ",
                axis=axis,
            )
        )
        node.input[0] = dequantized
        node.input[1] = f"{weight}_dq"
        if len(node.input) > 2 and node.input[2] in inits:
            b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            b_scale = (scale.astype(np.float64) * float(s_in)).reshape(-1)
            bq = np.round(b / b_scale)
            if np.abs(bq).max(initial=0) < 2**31 - 1:
                name = node.input[2]
                graph.initializer.extend(
                    [
                        _init(f"{name}_q", bq.astype(np.int32)),
                        _init(f"{name}_scale", b_scale.astype(np.float32)),
                        _init(f"{name}_zero", np.zeros(b_scale.size, dtype=np.int32)),
                    ]
                )
                new.append(
                    helper.make_node(
                        "DequantizeLinear",
                        [f"{name}_q", f"{name}_scale", f"{name}_zero"],
                        [f"{name}_dq"],
                        name=f"{key}_b_DQ",
                        axis=0,
                    )
                )
                node.input[2] = f"{name}_dq"
        pairs += 2
        if layer.output_scale is not None:
            out = node.output[0]
            graph.initializer.extend(
                [
                    _init(f"{key}_out_scale", np.array(layer.output_scale, dtype=np.float32)),
                    _init(f"{key}_out_zero", np.array(layer.output_zero_point or 0, dtype=np.uint8)),
                ]
            )
            after[index], _ = _qdq(out, f"{key}_out")
            renames[out] = f"{key}_out_dq"
            pairs += 1
        done += 1

    def renamed(n: Any) -> Any:
        for i, name in enumerate(n.input):
            if name in renames:
                n.input[i] = renames[name]
        return n

    nodes: list[Any] = []
    for index, node in enumerate(graph.node):
        nodes.extend(renamed(n) for n in before.get(index, []))
        nodes.append(renamed(node))
        nodes.extend(after.get(index, []))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in graph.node for name in n.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:  # the float weights and biases the int8 ones replaced
        graph.initializer.remove(init)
    graph_outputs = {o.name for o in graph.output}
    if graph_outputs & set(renames):
        raise ConfigError("an output quantizer sits on a model output; int8 export keeps outputs float")
    return done, pairs, notes


def to_onnx_int8(
    qmodel: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    calibration: Iterable[Any],
    *,
    check_batches: int = 2,
    max_rel_error: float = 0.05,
) -> Int8Export:
    """Write the int8 QDQ ONNX model of `qmodel` (fake-quantized, 8-bit or narrower) to `path`.

    `calibration` yields real input batches (tensors, tuples or netdiet Batches); they are only used to
    check the file: it is written only if ONNX Runtime's output stays within `max_rel_error`
    (max |int8 - fake-quant| / max |fake-quant|) of the PyTorch fake-quant model on `check_batches` of
    them. No range is re-estimated: every scale is the one the quantizers hold."""
    _require()
    import onnx

    layers = quantized_layers(qmodel)
    if not layers:
        raise ConfigError("the model has no quantizers: attach them (netdiet.quant.attach_quantizers) first")
    wide = [
        p
        for p, q in layers.items()
        if max(q.weight_bits, q.act_bits) > 8 and min(q.weight_bits, q.act_bits) < 32
    ]
    if wide or any((q.weight_bits == 32) != (q.act_bits == 32) for q in layers.values()):
        raise ConfigError(
            "int8 export needs every quantized layer at <= 8 bits on both weight and input "
            f"(ONNX Runtime's kernels are int8 x uint8); these are not: {wide or sorted(layers)[:3]}"
        )
    low = sorted(p for p, q in layers.items() if q.act_bits < 8)
    if low:
        raise ConfigError(
            f"activations below 8 bits have no ONNX Runtime kernel ({low[:3]}); use 8-bit activations "
            "for an ONNX int8 export (weights below 8 bits are stored on the 8-bit grid)"
        )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        plain, _ = strip_quantizers(qmodel)
        fp32 = to_onnx(plain, example_inputs, staging / "fp32.onnx")
        names = [f"input_{i}" for i in range(len(_tensors(example_inputs)))]
        batches = _batches_as_numpy(calibration, names, check_batches)
        proto = onnx.load(str(fp32))
        done, pairs, notes = insert_qdq(proto, layers)
        if done == 0:
            raise ConfigError(
                "no quantized layer was found in the ONNX graph (weights must be initializers named "
                "'<layer path>.weight'); nothing to export as int8"
            )
        onnx.checker.check_model(proto)
        tmp = staging / out.name
        onnx.save(proto, str(tmp))
        err, agree, abs_err = _check(qmodel, tmp, batches, names, absolute=True)
        step = one_step_bound(qmodel, layers)
        if err > max_rel_error and abs_err > step:
            raise VerificationError(
                f"int8 ONNX differs from the fake-quant model by {err:.3g} (max relative error > "
                f"{max_rel_error}; {abs_err:.3g} absolute, more than one input step of the last layer, "
                f"{step:.3g}): an op between quantized layers is not what ONNX Runtime computes"
            )
        kernels = _int8_kernels(tmp, staging / "optimized.onnx")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Int8Export(out, done, pairs, err, agree, kernels, notes)


def _int8_kernels(path: Path, optimized: Path) -> dict[str, int]:
    """Which int8 kernels ONNX Runtime made of the file (its optimised graph, counted by op type)."""
    import onnx

    ort = _require()
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3  # its warning that the saved graph is machine-specific is expected
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for node in onnx.load(str(optimized)).graph.node:
        if node.op_type.startswith(("QLinear", "DynamicQuantize")) or node.op_type in (
            "MatMulNBits",
            "QGemm",
            "MatMulInteger",
            "ConvInteger",
            "MatMulIntegerToFloat",
        ):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def one_step_bound(qmodel: nn.Module, layers: dict[str, QuantizedLayer]) -> float:
    """How far the output may move if every input of the last quantized layer moved by one step
    (input step x the largest row L1 norm of its weight): the tolerance of "within one step"."""
    path = list(layers)[-1]
    layer = layers[path]
    weight = qmodel.get_submodule(path).weight
    assert isinstance(weight, torch.Tensor)
    weight = weight.detach()
    return float(layer.input_scale or 0.0) * float(weight.reshape(weight.shape[0], -1).abs().sum(1).max())


def _check(
    qmodel: nn.Module,
    path: Path,
    batches: list[dict[str, np.ndarray]],
    names: list[str],
    absolute: bool = False,
) -> Any:
    ort = _require()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    was = qmodel.training
    qmodel.eval()
    worst, worst_abs, agree, total = 0.0, 0.0, 0, 0
    try:
        for feed in batches:
            with torch.no_grad():
                expected = qmodel(*[torch.from_numpy(feed[n]) for n in names])
            e = (expected[0] if isinstance(expected, (tuple, list)) else expected).detach().numpy()
            got = session.run(None, feed)[0]
            diff = float(np.abs(got - e).max())
            worst = max(worst, diff / max(float(np.abs(e).max()), 1e-12))
            worst_abs = max(worst_abs, diff)
            if e.ndim == 2:
                agree += int((got.argmax(1) == e.argmax(1)).sum())
                total += e.shape[0]
    finally:
        qmodel.train(was)
    share = agree / total if total else None
    return (worst, share, worst_abs) if absolute else (worst, share)


def _quantize_float_export(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    check: Iterable[Any],
    quantize: Callable[[Path, Path], None],
    *,
    what: str,
    check_batches: int,
    max_rel_error: float,
) -> tuple[Path, float, float | None, dict[str, int]]:
    """The fp32 export of a float `model`, rewritten by an ONNX Runtime quantization tool
    (`quantize(fp32_path, out_path)`), checked against `model` and only then moved to `path`.
    Returns (path, max relative error, top-1 agreement, int8 kernels in ORT's optimised graph)."""
    _require()
    if quantized_layers(model):
        raise ConfigError(
            f"{what} quantizes a float model; this one has fake quantizers (use to_onnx_int8, which keeps "
            "their learned scales)"
        )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fp32 = to_onnx(model, example_inputs, staging / "fp32.onnx")
        names = [f"input_{i}" for i in range(len(_tensors(example_inputs)))]
        batches = _batches_as_numpy(check, names, check_batches)
        tmp = staging / out.name
        quantize(fp32, tmp)
        err, agree = _check(model, tmp, batches, names)
        if err > max_rel_error and (agree is None or agree < 0.9):
            raise VerificationError(
                f"{what} ONNX differs from the float model by {err:.3g} (max relative error) with top-1 "
                f"agreement {agree}; keep this model at higher precision"
            )
        kernels = _int8_kernels(tmp, staging / "optimized.onnx")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out, err, agree, kernels


def to_onnx_dynamic_int8(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    check: Iterable[Any],
    *,
    check_batches: int = 2,
    max_rel_error: float = 0.1,
) -> Int8Export:
    """Dynamic int8 ONNX of a float model: int8 weights of every MatMul/Gemm, activations quantized at
    run time per batch (ONNX Runtime's `quantize_dynamic`; MatMulInteger kernels). No calibration, and
    the choice for transformers: their linears are MatMuls on activations whose range moves with every
    input, and ONNX Runtime has no static int8 attention. Checked against `model` on `check` batches."""

    def quantize(fp32: Path, tmp: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=False)

    out, err, agree, kernels = _quantize_float_export(
        model,
        example_inputs,
        path,
        check,
        quantize,
        what="dynamic int8",
        check_batches=check_batches,
        max_rel_error=max_rel_error,
    )
    layers = int(
        sum(kernels.get(k, 0) for k in ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"))
    )
    return Int8Export(
        out, layers, 0, err, agree, kernels, ["dynamic: activations quantized per batch at run time"]
    )


def to_onnx_int4_weights(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    check: Iterable[Any],
    *,
    block_size: int = 32,
    check_batches: int = 2,
    max_rel_error: float = 0.25,
) -> Int8Export:
    """4-bit weight-only ONNX: every MatMul with a constant weight becomes ONNX Runtime's MatMulNBits
    (blockwise symmetric int4, `block_size` weights per scale; activations stay float), written by
    ONNX Runtime's own `MatMulNBitsQuantizer`. It buys size; measured on these machines it is not faster
    than fp32 for the small BERT-style model at batch 1 or 64, so use it where bytes are the budget.
    Checked against `model` on `check` batches."""
    if block_size < 16 or block_size & (block_size - 1):
        raise ConfigError(
            f"block_size must be a power of two >= 16 (ONNX Runtime's kernels), got {block_size}"
        )

    def quantize(fp32: Path, tmp: Path) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(fp32)), bits=4, block_size=block_size, is_symmetric=True
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(tmp), use_external_data_format=False)
        if not any(n.op_type == "MatMulNBits" for n in onnx.load(str(tmp)).graph.node):
            raise ConfigError("the model has no MatMul with a constant weight: nothing to store in 4 bits")

    out, err, agree, kernels = _quantize_float_export(
        model,
        example_inputs,
        path,
        check,
        quantize,
        what="4-bit weight-only",
        check_batches=check_batches,
        max_rel_error=max_rel_error,
    )
    replaced = kernels.get("MatMulNBits", 0)
    return Int8Export(out, replaced, 0, err, agree, kernels, [f"int4 weights, blocks of {block_size}"])
