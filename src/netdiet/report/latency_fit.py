"""Fit and check a latency model against end-to-end measurements of real pruned variants.

`calibrate_latency` measures the dense model and random pruned variants (half of them rounded to the
channel multiples the table measured to pay, half not, because both kinds get deployed), exports each one
for real, and fits `measured = scale * tabled + unaligned_ms * n_unaligned + activation_ms * melems +
overhead` (see LatencyModel; every term counts only the layers of kept residual blocks) by robust (soft-L1) least squares on relative residuals with scipy, so one
timing hit by a burst of load on a shared machine does not bend the fit. The fit is stored in the table
under the model's fingerprint. On a model with droppable blocks every third variant also drops a random
set of them (`depth_variants` in the fit), so the terms are fitted on settings that trade depth too: a
fit on width variants alone mispriced ResNet-20 settings that drop blocks by 14% (median; refitted: 2.0%,
benchmarks/latency/RESULTS-depth-cpu-quick.md). A stored fit without depth variants is refitted for such
models.

`validate_latency` measures other random variants (a different seed: held out from the fit) and reports
the prediction error twice: of the latency itself, and of the latency relative to the dense model measured
in the same pass (what a relative budget such as latency=0.6 relies on; immune to the machine being
faster or slower than when the table was calibrated). Timings are medians under the table's protocol, on
the table's backend.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from netdiet.cost import cost
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


DEPTH_EVERY = 3  # every third calibration / validation variant drops blocks too (models with blocks)
DROP_PROB = 0.4  # each droppable block is dropped with this probability in such a variant


def random_block_drops(space: Space, n: int, seed: int) -> list[dict[str, int]]:
    """Per variant, the blocks it drops ({path: 0}, at least one) or {} (every third one drops, from
    the third; none when the model has no droppable block)."""
    import torch

    paths = [k.site for k in space.knobs_of("block")]
    out: list[dict[str, int]] = []
    for i in range(n):
        if not paths or i % DEPTH_EVERY != DEPTH_EVERY - 1:
            out.append({})
            continue
        gen = torch.Generator().manual_seed(seed + 7919 * (i + 1))
        drop = [p for p, u in zip(paths, torch.rand(len(paths), generator=gen).tolist()) if u < DROP_PROB]
        out.append(dict.fromkeys(drop or [paths[i % len(paths)]], 0))
    return out


def _resize(kept: Any, n: int, size: int, seed: int) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    chosen = set(kept.tolist())
    rest = [u for u in torch.randperm(size, generator=gen).tolist() if u not in chosen]
    units = (kept.tolist() + rest)[:n] if n > len(chosen) else kept.tolist()[:n]
    return torch.sort(torch.tensor(units, dtype=torch.long)).values


def measure_keeps(
    space: Space,
    keeps: list[Keep | None],
    table: LatencyTable,
    rounds: int = 3,
    precision: str = "fp32",
    blocks: list[dict[str, int]] | None = None,
) -> list[float]:
    """Export every keep-setting for real (None: the dense model), with the blocks `blocks[i]` drops,
    and time it end to end on the table's backend, each as a ratio to the dense model timed just before
    it (`time_against_reference`); in `precision` (int8: every conv/linear layer quantized, exported as
    int8 QDQ)."""
    from netdiet.export import export_assignment, export_model
    from netdiet.report.latency_e2e import prepare_runner, time_against_reference
    from netdiet.space import Assignment

    drops = {id(k): b for k, b in zip(keeps, blocks or []) if k is not None and b}

    def runner(keep: Keep | None) -> Any:
        if keep is None:
            model = space.model
        elif id(keep) in drops:
            choice = Assignment.of(keep=keep, blocks=drops[id(keep)])
            model = export_assignment(space, choice, verify=False)[0]
        else:
            model = export_model(space, keep, verify=False)
        return prepare_runner(
            model,
            space.example_inputs.args,
            table.backend,
            batch=table.batch,
            threads=int(table.env["threads"]),
            dtype=str(table.env["dtype"]),
            precision=precision,
        )

    reference = runner(None)
    dense_ms, measured = time_against_reference(
        reference, [runner(k) for k in keeps if k is not None], _protocol(table), rounds
    )
    it = iter(measured)
    return [dense_ms if k is None else next(it) for k in keeps]


def calibrate_latency(
    space: Space,
    table: LatencyTable,
    *,
    n_fit: int = 10,
    seed: int = 0,
    path: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    precision: str = "fp32",
) -> LatencyModel:
    """Fit the model's scale and overhead on the dense model plus `n_fit` random variants; store and
    return the calibrated LatencyModel (written back to `path` if given). `precision="int8"` fits the
    terms of the all-int8 model (every layer priced from the table's int8 timings, every variant
    exported as int8 QDQ) under their own key."""
    if n_fit < 1:
        raise ConfigError(f"n_fit must be >= 1, got {n_fit}")
    model = LatencyModel(space, table)
    bits = model.uniform_bits(8) if precision == "int8" else None
    if bits is not None and not model.has_int8:
        raise ConfigError("int8 calibration needs a table with int8 timings: profile with the int8 precision")
    keeps: list[Keep | None] = [None, *random_variants(space, n_fit, seed, model.group_multiples(precision))]
    drops = [{}, *random_block_drops(space, n_fit, seed)]
    counts = [space.counts(keep) for keep in keeps]
    tabled = [float(model.tabled_ms(c, bits, b or None)) for c, b in zip(counts, drops)]
    unaligned = [float(model.unaligned_layers(c, bits, b or None)) for c, b in zip(counts, drops)]
    melems = [float(model.activation_melems(c, b or None)) for c, b in zip(counts, drops)]
    measured = measure_keeps(space, keeps, table, precision=precision, blocks=drops)
    if progress:
        for i, (t, m) in enumerate(zip(tabled, measured)):
            progress(f"calibrate {precision} {i + 1}/{len(keeps)}: tabled {t:.3f} ms, measured {m:.3f} ms")
    features = np.stack(
        [np.asarray(tabled), np.asarray(unaligned, dtype=float), np.asarray(melems), np.ones(len(tabled))],
        axis=1,
    )
    target = np.asarray(measured)
    # the intercept and the activation term may be negative: every isolated layer timing includes a
    # runtime call and layout conversions that the whole model pays once
    fit = least_squares(
        lambda x: (features @ x - target) / target,
        x0=np.array([1.0, 0.0, 0.0, 0.0]),
        bounds=([0.1, 0.0, -np.inf, -np.inf], [10.0, np.inf, np.inf, np.inf]),
        loss="soft_l1",
        f_scale=0.05,
    )
    scale, per_unaligned, per_melem, overhead = (float(v) for v in fit.x)
    predicted = list(features @ fit.x)
    table.calibration[model.calibration_key(precision)] = {
        "scale": scale,
        "unaligned_ms": per_unaligned,
        "activation_ms": per_melem,
        "overhead_ms": overhead,
        "dense_measured_ms": measured[0],
        "fit": [
            {
                "tabled_ms": t,
                "unaligned_layers": u,
                "activation_melems": e,
                "measured_ms": m,
                "dropped": sorted(b),
            }
            for t, u, e, m, b in zip(tabled, unaligned, melems, measured, drops)
        ],
        "depth_variants": sum(1 for b in drops if b),
        "fit_median_abs_error": statistics.median(abs(p - m) / m for p, m in zip(predicted, measured)),
        "seed": seed,
        "model": type(space.model).__name__,
        "precision": precision,
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
    precision: str = "fp32",
) -> dict[str, Any]:
    """Prediction error on `n` held-out random variants: per variant and the median/max absolute error
    (in `precision`: int8 variants are exported as int8 QDQ and priced at 8 bits). On a model with
    droppable blocks every third variant drops some (`dropped` in its row)."""
    model = LatencyModel(space, table)
    if not model.is_calibrated(precision):
        raise ConfigError(
            f"validate a calibrated latency model: run calibrate_latency (netdiet profile) for {precision} first"
        )
    bits = model.uniform_bits(8) if precision == "int8" else None
    rows: list[dict[str, Any]] = []
    keeps = random_variants(space, n, seed, model.group_multiples(precision))
    drops = random_block_drops(space, n, seed)
    dense_measured, *all_measured = measure_keeps(
        space, [None, *keeps], table, precision=precision, blocks=[{}, *drops]
    )
    dense_predicted = model.predict_keep(None, bits)
    for i, (keep, blocks, measured) in enumerate(zip(keeps, drops, all_measured)):
        predicted = float(model.predict(space.counts(keep), bits, blocks or None))
        flops_ratio = float(cost(space, keep, blocks=blocks or None).flops) / float(space.cost().flops)
        predicted_ratio = predicted / dense_predicted
        measured_ratio = measured / dense_measured
        rows.append(
            {
                "variant": i,
                "dropped": sorted(blocks),
                "flops_ratio": flops_ratio,
                "predicted_ms": predicted,
                "measured_ms": measured,
                "error": (predicted - measured) / measured,
                "predicted_ratio": predicted_ratio,
                "measured_ratio": measured_ratio,
                "ratio_error": (predicted_ratio - measured_ratio) / measured_ratio,
            }
        )
        if progress:
            progress(f"validate {i + 1}/{n}: predicted {predicted:.3f} ms, measured {measured:.3f} ms")
    errors = [abs(r["error"]) for r in rows]
    ratio_errors = [abs(r["ratio_error"]) for r in rows]
    return {
        "backend": table.backend,
        "batch": table.batch,
        "variants": rows,
        "dense_measured_ms": dense_measured,
        "dense_predicted_ms": dense_predicted,
        "median_abs_error": statistics.median(errors),
        "max_abs_error": max(errors),
        "median_abs_ratio_error": statistics.median(ratio_errors),
        "max_abs_ratio_error": max(ratio_errors),
        "seed": seed,
        "precision": precision,
    }
