"""fp32 ONNX export of any model (dense, exported, factorised), checked against PyTorch in ONNX Runtime.

Uses torch.onnx.export with the torch.export-based exporter (no private ONNX internals, unlike OTO), a
dynamic batch dimension, and writes to a temporary file that is renamed only once the check passes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from netdiet.errors import ConfigError, VerificationError
from netdiet.graph import normalize_inputs
from netdiet.graph.capture import eval_mode

EXTERNAL_DATA_BYTES = 1_800_000_000  # below protobuf's 2 GB message limit, with room for the graph


def _param_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _require() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "ONNX export needs onnx, onnxscript and onnxruntime: pip install 'netdiet[onnx]'"
        ) from exc
    return onnxruntime


def _tensors(example_inputs: Any) -> list[torch.Tensor]:
    inputs = normalize_inputs(example_inputs)
    if inputs.kwargs:
        raise ConfigError("ONNX export takes positional example inputs only (pass a tuple of tensors)")
    if not all(isinstance(a, torch.Tensor) for a in inputs.args):
        raise ConfigError("ONNX export takes tensor example inputs only")
    return list(inputs.args)


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _outputs(o)]
    return []


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs a warning per missing optional library (torchvision ops) and pytree
    deprecations on every call; they say nothing about the user's model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def to_onnx(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    rtol: float = 1e-4,
) -> Path:
    """Write `model` as ONNX to `path` and check ONNX Runtime's outputs against PyTorch's (max rel. error).

    The file is self-contained (copy it alone and it loads); a model over 1.8 GB of weights keeps them in
    `path + ".data"` beside it. Nothing is left at `path` unless the check passed."""
    ort = _require()
    args = _tensors(example_inputs)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [f"input_{i}" for i in range(len(args))]
    # AUTO: dynamic where the model allows it, static (never an error) where it does not
    # token inputs (integer ids, masks) also get a dynamic sequence length: text batches are padded to
    # their own longest example
    auto = torch.export.Dim.AUTO
    dynamic = (
        tuple({0: auto, 1: auto} if not a.is_floating_point() and a.dim() >= 2 else {0: auto} for a in args)
        if dynamic_batch
        else None
    )
    # One self-contained file: weights inline (protobuf's 2 GB limit allows it for every model that fits
    # a phone or a CPU); above it the weights go to `<name>.data` beside it, a fixed, documented name.
    # Both are written in a private staging folder and moved into place only once ONNX Runtime agrees.
    external = _param_bytes(model) > EXTERNAL_DATA_BYTES
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp = staging / out.name
    try:
        with eval_mode(model), torch.no_grad(), _quiet_exporter():
            torch.onnx.export(
                model,
                tuple(args),
                str(tmp),
                dynamo=True,
                external_data=external,
                input_names=names,
                dynamic_shapes=dynamic,
                verbose=False,
            )
            expected = _outputs(model(*args))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {n: a.detach().cpu().numpy() for n, a in zip(names, args)})
        if len(got) != len(expected):
            raise VerificationError(f"ONNX model returns {len(got)} outputs, PyTorch {len(expected)}")
        for i, (g, e) in enumerate(zip(got, expected)):
            e_np = e.detach().cpu().numpy()
            scale = float(np.abs(e_np).max()) if e_np.size else 0.0
            err = float(np.abs(g - e_np).max()) / max(scale, 1e-12) if e_np.size else 0.0
            if err > rtol:
                raise VerificationError(
                    f"ONNX Runtime output {i} differs from PyTorch: max relative error {err:.3g}"
                )
        data = out.with_name(out.name + ".data")
        written = [f for f in staging.iterdir() if f != tmp]
        if external:
            if [f.name for f in written] != [data.name]:
                raise VerificationError(
                    f"the ONNX exporter wrote {[f.name for f in written]} beside the model, "
                    f"expected only {data.name}"
                )
            os.replace(written[0], data)
        elif written:
            raise VerificationError(f"the ONNX exporter wrote unexpected files {[f.name for f in written]}")
        elif data.exists():
            data.unlink()  # a stale data file of an earlier, larger export must not sit beside this one
        os.replace(tmp, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def onnx_latency(
    path: str | os.PathLike, example_inputs: Any, *, threads: int = 1, warmup: int = 5, repeats: int = 30
) -> float:
    """Median milliseconds of one ONNX Runtime CPU run with a fixed thread count."""
    import statistics
    import time

    ort = _require()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: a.detach().cpu().numpy() for i, a in zip(session.get_inputs(), _tensors(example_inputs))}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)
