"""Static int8 ONNX (QDQ) that carries the learned scales, so ONNX Runtime runs QLinearConv / QGemm.

The fake-quantized model (quantizers from `netdiet.quant`, BN already folded into the convs) is
stripped to float, exported by `to_onnx` and handed to ONNX Runtime's QDQ quantizer with every learned
scale as a tensor override: per-channel int8 weight scales (no weight re-calibration and no scale
adjustment for int32 biases) and the uint8 scale and zero point of every quantized layer's input. The
remaining tensors ONNX Runtime quantizes to fuse its kernels (conv outputs feeding residual adds) get
ranges from the calibration batches. The result is checked against the PyTorch fake-quant model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
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
    overridden_tensors: int
    max_rel_error: float  # ONNX Runtime int8 vs PyTorch fake-quant, over the check batches
    top1_agreement: float | None  # for class logits: fraction of argmax that agree
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


def _overrides(
    model_path: Path, layers: dict[str, QuantizedLayer]
) -> tuple[dict[str, Any], list[str], list[str]]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name: i for i in graph.initializer}
    overrides: dict[str, Any] = {}
    nodes: list[str] = []
    notes: list[str] = []
    for node in graph.node:
        if node.op_type not in QUANT_OPS or len(node.input) < 2:
            continue
        weight = node.input[1]
        path = weight[: -len(".weight")] if weight.endswith(".weight") else None
        layer = layers.get(path) if path is not None else None
        if layer is None:
            continue
        nodes.append(node.name)
        if layer.weight_scale is not None and weight in inits:
            axis = 1 if node.op_type == "MatMul" else 0
            if inits[weight].dims[axis] != layer.weight_scale.numel():
                raise ConfigError(
                    f"{path}: weight has {inits[weight].dims[axis]} channels on axis {axis}, "
                    f"its quantizer {layer.weight_scale.numel()}"
                )
            scales = layer.weight_scale.float().numpy()
            per_channel = [
                {"scale": np.array(s, dtype=np.float32), "zero_point": np.array(0, dtype=np.int8)}
                for s in scales
            ]
            per_channel[0]["axis"] = axis
            overrides[weight] = per_channel
        elif layer.weight_scale is not None:
            notes.append(f"{path}: weight is not a plain initializer in ONNX; ONNX Runtime set its scales")
        if layer.input_scale is not None:
            overrides[node.input[0]] = [
                {
                    "scale": np.array(layer.input_scale, dtype=np.float32),
                    "zero_point": np.array(layer.input_zero_point or 0, dtype=np.uint8),
                }
            ]
    return overrides, nodes, notes


def to_onnx_int8(
    qmodel: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    calibration: Iterable[Any],
    *,
    check_batches: int = 2,
    calibration_batches: int = 8,
    max_rel_error: float = 0.1,
) -> Int8Export:
    """Write the int8 QDQ ONNX model of `qmodel` (fake-quantized, 8-bit or narrower) to `path`.

    `calibration` yields real input batches (tensors, tuples or netdiet Batches). The file is written
    only if ONNX Runtime's output stays within `max_rel_error` (max |int8 - fake-quant| / max |fake-quant|)
    of the PyTorch fake-quant model on `check_batches` of them."""
    _require()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

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
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        plain, _ = strip_quantizers(qmodel)
        fp32 = to_onnx(plain, example_inputs, staging / "fp32.onnx")
        names = [f"input_{i}" for i in range(len(_tensors(example_inputs)))]
        calib = _batches_as_numpy(calibration, names, calibration_batches)
        overrides, nodes, notes = _overrides(fp32, layers)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(calib)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.it, None)

        tmp = staging / out.name
        quantize_static(
            str(fp32),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANT_OPS),
            nodes_to_quantize=nodes,
            extra_options={"TensorQuantOverrides": overrides, "QDQDisableWeightAdjustForInt32Bias": True},
        )
        err, agree = _check(qmodel, tmp, calib[:check_batches], names)
        if err > max_rel_error:
            raise VerificationError(
                f"int8 ONNX differs from the fake-quant model by {err:.3g} (max relative error > "
                f"{max_rel_error}); the quantized ranges do not fit the data (calibrate on more batches)"
            )
        os.replace(tmp, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Int8Export(out, len(nodes), len(overrides), err, agree, notes)


def _check(
    qmodel: nn.Module, path: Path, batches: list[dict[str, np.ndarray]], names: list[str]
) -> tuple[float, float | None]:
    ort = _require()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    was = qmodel.training
    qmodel.eval()
    worst, agree, total = 0.0, 0, 0
    try:
        for feed in batches:
            with torch.no_grad():
                expected = qmodel(*[torch.from_numpy(feed[n]) for n in names])
            e = (expected[0] if isinstance(expected, (tuple, list)) else expected).detach().numpy()
            got = session.run(None, feed)[0]
            worst = max(worst, float(np.abs(got - e).max()) / max(float(np.abs(e).max()), 1e-12))
            if e.ndim == 2:
                agree += int((got.argmax(1) == e.argmax(1)).sum())
                total += e.shape[0]
    finally:
        qmodel.train(was)
    return worst, (agree / total if total else None)
