"""End-to-end latency of a whole model on a latency table's backend: what predictions are checked against.

The same backends as the layer tables: ONNX Runtime CPU (the model exported to fp32 ONNX, checked against
PyTorch, then timed), PyTorch eager on CPU, CUDA, and the deterministic synthetic backend (the sum of the
synthetic layer formula over the model's conv/linear layers plus a fixed overhead, so tests of the
calibration and validation logic need no wall clock).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netdiet.cost.latency import TimingProtocol, signature_of, time_call
from netdiet.cost.latency.backends import DTYPES, synthetic_ms
from netdiet.errors import ConfigError
from netdiet.graph import normalize_inputs

SYNTHETIC_OVERHEAD_MS = 0.05


def batched(example_inputs: Any, batch: int) -> tuple[torch.Tensor, ...]:
    """The example inputs with their first example repeated to `batch` (positional tensors only)."""
    inputs = normalize_inputs(example_inputs)
    if inputs.kwargs or not all(isinstance(a, torch.Tensor) for a in inputs.args):
        raise ConfigError("end-to-end latency takes positional tensor example inputs only")
    return tuple(a[:1].expand(batch, *a.shape[1:]).contiguous() for a in inputs.args)


@dataclass
class Runner:
    """One model made ready to time on a backend: `call()` runs one forward pass; `fixed_ms` is set
    instead for the synthetic backend (no wall clock)."""

    call: Callable[[], object] | None = None
    sync: Callable[[], None] | None = None
    fixed_ms: float | None = None

    def time(self, protocol: TimingProtocol) -> float:
        if self.fixed_ms is not None:
            return self.fixed_ms
        assert self.call is not None
        return time_call(self.call, protocol, self.sync)


def prepare_runner(
    model: nn.Module,
    example_inputs: Any,
    backend: str,
    *,
    batch: int = 1,
    threads: int = 1,
    dtype: str = "float32",
    precision: str = "fp32",
) -> Runner:
    """Export/copy `model` once for `backend` so it can be timed many times (see the module docstring).

    `precision="int8"`: exported as int8 QDQ ONNX, as `compress(bits=8)` exports it: a fake-quantized
    model with its own scales, a float one with every conv/linear quantized to 8 bits and calibrated on
    the example inputs; onnxruntime and synthetic only."""
    args = batched(example_inputs, batch)
    if precision not in ("fp32", "int8"):
        raise ConfigError(f"precision must be 'fp32' or 'int8', got {precision!r}")
    if precision == "int8" and backend not in ("onnxruntime", "synthetic"):
        raise ConfigError(f"backend '{backend}' has no int8 precision; use onnxruntime")
    if backend == "synthetic":
        return Runner(fixed_ms=synthetic_model_ms(model, args, precision))
    if backend == "onnxruntime":
        if precision == "int8":
            return _onnxruntime_int8_runner(model, args, threads)
        return _onnxruntime_runner(model, args, threads)
    if backend in ("torch", "cuda"):
        device = "cuda" if backend == "cuda" else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("backend 'cuda' needs a CUDA device; none is visible to torch here")
        runner = copy.deepcopy(model).to(device, DTYPES[dtype]).eval()
        xs = tuple(a.to(device, DTYPES[dtype]) if a.is_floating_point() else a.to(device) for a in args)

        @torch.no_grad()
        def call() -> object:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return runner(*xs)
            finally:
                torch.set_num_threads(before)

        return Runner(call, torch.cuda.synchronize if device == "cuda" else None)
    raise ConfigError(f"unknown latency backend '{backend}'")


def measure_model_ms(
    model: nn.Module,
    example_inputs: Any,
    backend: str,
    *,
    batch: int = 1,
    threads: int = 1,
    dtype: str = "float32",
    protocol: TimingProtocol | None = None,
    precision: str = "fp32",
) -> float:
    """Median ms of one forward pass of `model` at `batch` on `backend` (see the module docstring)."""
    runner = prepare_runner(
        model, example_inputs, backend, batch=batch, threads=threads, dtype=dtype, precision=precision
    )
    return runner.time(protocol or TimingProtocol())


def time_against_reference(
    reference: Runner, runners: list[Runner], protocol: TimingProtocol, rounds: int = 3
) -> tuple[float, list[float]]:
    """Time each runner right after the reference, as a ratio, then scale the median ratio by the
    reference's best median. On a shared machine the load changes for seconds at a time and shifts
    every timing of a pass alike; ratios to a neighbour measured moments apart cancel that shift.
    Returns (reference ms, [ms of each runner])."""
    ratios: list[list[float]] = [[] for _ in runners]
    reference_ms: list[float] = []
    for _ in range(rounds):
        for i, runner in enumerate(runners):
            ref = reference.time(protocol)
            reference_ms.append(ref)
            ratios[i].append(runner.time(protocol) / ref)
    best = min(reference_ms)
    return best, [statistics.median(r) * best for r in ratios]


def _onnxruntime_runner(model: nn.Module, args: tuple[torch.Tensor, ...], threads: int) -> Runner:
    from netdiet.export.onnx import to_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = to_onnx(model, args, Path(tmp) / "model.onnx")
        return _session_runner(str(path), args, threads)


def _session_runner(path: str, args: tuple[torch.Tensor, ...], threads: int) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: a.detach().cpu().numpy() for i, a in zip(session.get_inputs(), args)}
    return Runner(lambda: session.run(None, feed))


def _onnxruntime_int8_runner(model: nn.Module, args: tuple[torch.Tensor, ...], threads: int) -> Runner:
    from netdiet.export.int8 import to_onnx_int8
    from netdiet.quant import prepare_quantized, quantized_layers

    example = tuple(a[:1] for a in args)
    qmodel = model
    if not quantized_layers(model):
        # a timing needs the graph, not accuracy: calibrate on the inputs themselves, never refuse the file
        qmodel, _ = prepare_quantized(model, example, [args], max_batches=1)
    with tempfile.TemporaryDirectory() as tmp:
        exported = to_onnx_int8(
            qmodel,
            example,
            Path(tmp) / "model.int8.onnx",
            [args],
            check_batches=1,
            max_rel_error=float("inf"),
        )
        return _session_runner(str(exported.path), args, threads)


def synthetic_model_ms(model: nn.Module, args: tuple[torch.Tensor, ...], precision: str = "fp32") -> float:
    from netdiet.quant import quantized_layers, strip_quantizers
    from netdiet.space import analyze

    if quantized_layers(model):
        model, _ = strip_quantizers(model)
    space = analyze(model, args)
    batch = int(args[0].shape[0])
    total = SYNTHETIC_OVERHEAD_MS
    for shape in space.analysis.layer_shapes:
        total += synthetic_ms(signature_of(shape), batch, shape.in_channels, shape.out_channels, precision)
    return total
