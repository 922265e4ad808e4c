"""Measured latency: warm-up, many repeats, the median, a fixed thread count.

Timings on shared machines are noisy (10-30%, sometimes 2-3x), so compare models inside one run, as
ratios, and never gate tests on them.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netdiet.graph import normalize_inputs
from netdiet.graph.capture import eval_mode


@contextmanager
def threads(n: int | None):  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    batch: int
    threads: int

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    example_inputs: Any,
    *,
    warmup: int = 5,
    repeats: int = 30,
    num_threads: int | None = None,
) -> Latency:
    """Median wall time of one forward pass of `model` on `example_inputs`, in eval mode, PyTorch eager."""
    inputs = normalize_inputs(example_inputs)
    first = next((a for a in (*inputs.args, *inputs.kwargs.values()) if isinstance(a, torch.Tensor)), None)
    batch = int(first.shape[0]) if first is not None and first.dim() > 0 else 1
    times: list[float] = []
    with threads(num_threads), eval_mode(model):
        for _ in range(warmup):
            model(*inputs.args, **inputs.kwargs)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(*inputs.args, **inputs.kwargs)
            times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) >= 10 else [times[0]] * 9
    return Latency(
        statistics.median(times),
        q[0],
        q[-1],
        repeats,
        batch,
        torch.get_num_threads() if not num_threads else num_threads,
    )


def compare_latency(
    models: dict[str, nn.Module], example_inputs: Any, *, rounds: int = 3, **kwargs: Any
) -> dict[str, Latency]:
    """Interleave the models over several rounds and keep each one's best-round median (noise control)."""
    best: dict[str, Latency] = {}
    for _ in range(rounds):
        for name, model in models.items():
            lat = measure_latency(model, example_inputs, **kwargs)
            if name not in best or lat.median_ms < best[name].median_ms:
                best[name] = lat
    return best
