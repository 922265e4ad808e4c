"""fp32 ONNX export of any model (dense, exported, factorised), checked against PyTorch in ONNX Runtime.

Uses torch.onnx.export with the torch.export-based exporter (no private ONNX internals, unlike OTO), a
dynamic batch dimension, and writes to a temporary file that is renamed only once the check passes.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
    """Write `model` as ONNX to `path` and check ONNX Runtime's outputs against PyTorch's (max rel. error)."""
    ort = _require()
    args = _tensors(example_inputs)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [f"input_{i}" for i in range(len(args))]
    # AUTO: dynamic where the model allows it, static (never an error) where it does not
    dynamic = tuple({0: torch.export.Dim.AUTO} for _ in args) if dynamic_batch else None
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        with eval_mode(model), torch.no_grad(), _quiet_exporter():
            torch.onnx.export(
                model,
                tuple(args),
                tmp,
                dynamo=True,
                input_names=names,
                dynamic_shapes=dynamic,
                verbose=False,
            )
            expected = _outputs(model(*args))
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
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
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
