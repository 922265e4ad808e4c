"""The timing protocol every latency number in netdiet follows.

Warm up, then time many repeats; calls faster than `min_sample_ms` are looped inside one sample so the
timer's resolution does not dominate; samples further than `outlier_mads` median absolute deviations
above the median are dropped (another process stole the core); the median of the rest is the result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from netdiet.errors import ConfigError


@dataclass(frozen=True)
class TimingProtocol:
    warmup: int = 5
    repeats: int = 25
    min_sample_ms: float = 0.5
    outlier_mads: float = 4.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 3:
            raise ConfigError(f"timing needs warmup >= 0 and repeats >= 3, got {self.warmup}, {self.repeats}")
        if self.min_sample_ms < 0 or self.outlier_mads <= 0:
            raise ConfigError("min_sample_ms must be >= 0 and outlier_mads > 0")

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "statistic": "median after outlier rejection"}


def robust_median(samples: list[float], outlier_mads: float = 4.0) -> float:
    med = statistics.median(samples)
    mad = statistics.median(abs(s - med) for s in samples)
    kept = [s for s in samples if s <= med + outlier_mads * 1.4826 * mad] if mad > 0 else samples
    return statistics.median(kept)


def time_call(
    fn: Callable[[], object], protocol: TimingProtocol, sync: Callable[[], None] | None = None
) -> float:
    """Median milliseconds of one call of `fn` under `protocol`."""
    for _ in range(max(1, protocol.warmup)):
        fn()
    if sync:
        sync()
    t0 = time.perf_counter()
    fn()
    if sync:
        sync()
    once_ms = (time.perf_counter() - t0) * 1000.0
    inner = (
        max(1, int(protocol.min_sample_ms / max(once_ms, 1e-6))) if once_ms < protocol.min_sample_ms else 1
    )
    inner = min(inner, 1000)
    samples = []
    for _ in range(protocol.repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        if sync:
            sync()
        samples.append((time.perf_counter() - t0) * 1000.0 / inner)
    return robust_median(samples, protocol.outlier_mads)
