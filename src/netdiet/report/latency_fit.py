"""Fit and check a latency model against end-to-end measurements of real pruned variants.

`calibrate_latency` measures the dense model and random pruned variants (half of them rounded to the
channel multiples the table measured to pay, half not, because both kinds get deployed), exports each one
for real, and fits `measured = scale * tabled + unaligned_ms * n_unaligned + overhead` by bounded least
squares (scipy; n_unaligned counts layers off their paying channel multiple). The fit is stored in the
table under the model's fingerprint.

`validate_latency` measures other random variants (a different seed: held out from the fit) and reports
the prediction error. Timings are medians under the table's protocol, on the table's backend.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear

from netdiet.cost.latency import LatencyModel, LatencyTable, TimingProtocol
from netdiet.errors import ConfigError
from netdiet.space import Space
from netdiet.space.keep import Keep


def _protocol(table: LatencyTable) -> TimingProtocol:
    """The table's protocol, with samples of at least 2 ms: whole models at batch 1 take well under a
    millisecond, where a single call is at the mercy of the scheduler."""
    p = table.protocol
    fields = {k: p[k] for k in ("warmup", "repeats", "min_sample_ms", "outlier_mads") if k in p}
    fields["min_sample_ms"] = max(2.0, float(fields.get("min_sample_ms", 0.0)))
    return TimingProtocol(**fields)


def random_variants(space: Space, n: int, seed: int, multiples: dict[str, int]) -> list[Keep]:
    """`n` random keep-settings (each group keeps 10-100%); odd ones rounded to the paying multiples."""
    out = []
    for i in range(n):
        keep = space.sample(None, seed=seed + i)
        if i % 2 == 1 and multiples:
            for name, m in multiples.items():
                size = space.group(name).size
                n_keep = min(size, max(m, int(round(len(keep[name]) / m)) * m))
                keep[name] = (
                    keep[name] if len(keep[name]) == n_keep else _resize(keep[name], n_keep, size, seed + i)
                )
        out.append(keep)
    return out


def _resize(kept: Any, n: int, size: int, seed: int) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    chosen = set(kept.tolist())
    rest = [u for u in torch.randperm(size, generator=gen).tolist() if u not in chosen]
    units = (kept.tolist() + rest)[:n] if n > len(chosen) else kept.tolist()[:n]
    return torch.sort(torch.tensor(units, dtype=torch.long)).values


def measure_keeps(
    space: Space, keeps: list[Keep | None], table: LatencyTable, rounds: int = 3
) -> list[float]:
    """Export every keep-setting for real (None: the dense model) and time them end to end on the table's
    backend, interleaved over `rounds` passes (best median of each)."""
    from netdiet.export import export_model
    from netdiet.report.latency_e2e import prepare_runner, time_interleaved

    runners = []
    for keep in keeps:
        model = space.model if keep is None else export_model(space, keep, verify=False)
        runners.append(
            prepare_runner(
                model,
                space.example_inputs.args,
                table.backend,
                batch=table.batch,
                threads=int(table.env["threads"]),
                dtype=str(table.env["dtype"]),
            )
        )
    return time_interleaved(runners, _protocol(table), rounds)


def calibrate_latency(
    space: Space,
    table: LatencyTable,
    *,
    n_fit: int = 10,
    seed: int = 0,
    path: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> LatencyModel:
    """Fit the model's scale and overhead on the dense model plus `n_fit` random variants; store and
    return the calibrated LatencyModel (written back to `path` if given)."""
    if n_fit < 1:
        raise ConfigError(f"n_fit must be >= 1, got {n_fit}")
    model = LatencyModel(space, table)
    keeps: list[Keep | None] = [None, *random_variants(space, n_fit, seed, model.group_multiples())]
    tabled = [float(model.tabled_ms(space.counts(keep))) for keep in keeps]
    unaligned = [model.unaligned_layers(space.counts(keep)) for keep in keeps]
    measured = measure_keeps(space, keeps, table)
    if progress:
        for i, (t, m) in enumerate(zip(tabled, measured)):
            progress(f"calibrate {i + 1}/{len(keeps)}: tabled {t:.3f} ms, measured {m:.3f} ms")
    a = np.stack([np.asarray(tabled), np.asarray(unaligned, dtype=float), np.ones(len(tabled))], axis=1)
    # the intercept may be negative: every isolated layer timing includes a runtime call the whole model
    # pays once
    fit = lsq_linear(a, np.asarray(measured), bounds=([0.1, 0.0, -np.inf], [10.0, np.inf, np.inf]))
    scale, per_unaligned, overhead = (float(v) for v in fit.x)
    predicted = [scale * t + per_unaligned * u + overhead for t, u in zip(tabled, unaligned)]
    table.calibration[model.fingerprint] = {
        "scale": scale,
        "unaligned_ms": per_unaligned,
        "overhead_ms": overhead,
        "dense_measured_ms": measured[0],
        "fit": [
            {"tabled_ms": t, "unaligned_layers": u, "measured_ms": m}
            for t, u, m in zip(tabled, unaligned, measured)
        ],
        "fit_median_abs_error": statistics.median(abs(p - m) / m for p, m in zip(predicted, measured)),
        "seed": seed,
        "model": type(space.model).__name__,
    }
    if path is not None:
        table.save(path)
    return LatencyModel(space, table)


def validate_latency(
    space: Space,
    table: LatencyTable,
    *,
    n: int = 10,
    seed: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Prediction error on `n` held-out random variants: per variant and the median/max absolute error."""
    model = LatencyModel(space, table)
    if not model.calibrated:
        raise ConfigError(
            "validate a calibrated latency model: run calibrate_latency (netdiet profile) first"
        )
    rows = []
    keeps = random_variants(space, n, seed, model.group_multiples())
    all_measured = measure_keeps(space, list(keeps), table)
    for i, (keep, measured) in enumerate(zip(keeps, all_measured)):
        predicted = model.predict_keep(keep)
        flops_ratio = float(space.cost(keep).flops) / float(space.cost().flops)
        rows.append(
            {
                "variant": i,
                "flops_ratio": flops_ratio,
                "predicted_ms": predicted,
                "measured_ms": measured,
                "error": (predicted - measured) / measured,
            }
        )
        if progress:
            progress(f"validate {i + 1}/{n}: predicted {predicted:.3f} ms, measured {measured:.3f} ms")
    errors = [abs(r["error"]) for r in rows]
    return {
        "backend": table.backend,
        "batch": table.batch,
        "variants": rows,
        "median_abs_error": statistics.median(errors),
        "max_abs_error": max(errors),
        "seed": seed,
    }
