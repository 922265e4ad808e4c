"""`netdiet report`: a markdown report with plots from one or more compression run directories.

Each run directory holds `report.json` (written by `netdiet compress` or the benchmarks). The report
shows the before/after table, kept widths per group (bar chart) and accuracy against FLOPs over runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from netdiet.errors import ConfigError
from netdiet.report.dynamics import (
    plot_gate_histograms,
    plot_staged_trace,
    plot_trace,
    read_snapshots,
    read_trace,
)


def read_runs(dirs: list[Path]) -> list[dict[str, Any]]:
    runs = []
    for d in dirs:
        candidates = [d / "report.json"] if (d / "report.json").is_file() else sorted(d.glob("*/report.json"))
        if not candidates:
            raise ConfigError(
                f"{d}: no report.json here or in its subdirectories; run `netdiet compress --out {d}` first"
            )
        for path in candidates:
            try:
                data = json.loads(path.read_text())
            except ValueError as exc:
                raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
            data["_dir"] = str(path.parent)
            runs.append(data)
    return runs


def _fmt(x: Any, scale: float = 1.0, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x / scale:.{digits}f}"


def run_name(run: dict[str, Any]) -> str:
    """The name the run was given (its --out folder), else its directory's name."""
    return str(run.get("run") or Path(run["_dir"]).name)


def failure(run: dict[str, Any]) -> str | None:
    """Why a run cannot be shown as a result (None when it can): missing or non-finite numbers."""
    c = run.get("compressed") or {}
    for key in ("flops", "accuracy", "test_accuracy"):
        value = c.get(key)
        if value is not None and not math.isfinite(float(value)):
            return f"compressed {key} is {value}"
    if c.get("flops") is None:
        return "no compressed FLOPs"
    return None


LATENCY_COLUMNS = (
    ("latency_ms_b1", "PyTorch b1 ms"),
    ("latency_ms_b64", "PyTorch b64 ms"),
    ("onnxruntime_ms_b1", "ORT b1 ms"),
    ("onnxruntime_ms_b64", "ORT b64 ms"),
)


def latency_columns(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The latency measurements any run has: ONNX Runtime ones are the target runtime when present."""
    return [(k, label) for k, label in LATENCY_COLUMNS if any(k in r["compressed"] for r in runs)]


def slower_exports(runs: list[dict[str, Any]]) -> list[str]:
    """One sentence per measurement where the compressed model ran slower than the dense one."""
    notes = []
    for r in runs:
        d, c = r["dense"], r["compressed"]
        for key, label in LATENCY_COLUMNS:
            if d.get(key) and c.get(key) is not None and c[key] > d[key]:
                notes.append(
                    f"**{run_name(r)}: the compressed model is SLOWER than dense on {label[:-3]}** "
                    f"({d[key]:.3g} -> {c[key]:.3g} ms, {c[key] / d[key]:.2f}x)"
                )
        lat = r.get("latency") or {}
        check = lat.get("budget_check")
        if check is not None and not check["met"]:
            unit = " of dense" if check["relative"] else " ms"
            notes.append(
                f"**{run_name(r)}: measured latency is over its budget** ({check['measured']:.3g}{unit} "
                f"against {check['limit']:.3g}{unit}, {100 * check['over']:.0f}% over)"
            )
        if lat.get("measured_ratio") is not None and lat["measured_ratio"] > 1:
            notes.append(
                f"**{run_name(r)}: SLOWER than dense on {lat['backend']} at batch {lat['batch']}** "
                f"(measured {lat['measured_ratio']:.2f}x of dense)"
            )
    return notes


def table(runs: list[dict[str, Any]]) -> str:
    columns = latency_columns(runs)
    head = "| run | method | budget | val acc dense -> slim | test acc dense -> slim | MFLOPs dense -> slim | params (K) |"
    rows = [
        head + "".join(f" {label} |" for _, label in columns),
        "|---|---|---|---|---|---|---|" + "---|" * len(columns),
    ]
    for r in runs:
        d, c = r["dense"], r["compressed"]
        budget = ", ".join(f"{k}={v}" for k, v in r.get("budget", {}).items())
        cells = "".join(
            f" {_fmt(d.get(k))} -> {_fmt(c.get(k))}{' (slower)' if _slower(d.get(k), c.get(k)) else ''} |"
            for k, _ in columns
        )
        rows.append(
            f"| {run_name(r)} | {r.get('method', '?')} | {budget} | {_fmt(d.get('accuracy'), 0.01, 1)} -> {_fmt(c.get('accuracy'), 0.01, 1)} "
            f"| {_fmt(d.get('test_accuracy'), 0.01, 1)} -> {_fmt(c.get('test_accuracy'), 0.01, 1)} "
            f"| {_fmt(d['flops'], 1e6)} -> {_fmt(c['flops'], 1e6)} | {_fmt(d['params'], 1e3, 1)} -> {_fmt(c['params'], 1e3, 1)} |"
            + cells
        )
    return "\n".join(rows)


def _slower(dense: float | None, slim: float | None) -> bool:
    return dense is not None and slim is not None and slim > dense


def save_figure(fig: Any, path: Path) -> None:
    """Write the figure to a temporary file and rename it, so a crash never leaves a half-written PNG."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def plot_widths(run: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, kept = run.get("sizes", {}), run.get("kept", {})
    names = [n for n in sizes if n in kept]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4))
    xs = range(len(names))
    ax.bar(xs, [sizes[n] for n in names], color="#d9d9d9", label="dense")
    ax.bar(xs, [kept[n] for n in names], color="#3b7dd8", label="kept")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("units")
    ax.set_title(f"kept units per group ({run.get('method', '')})")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def layer_bits(run: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per quantized layer (module path): (weight bits, activation bits), from the run's assignment."""
    raw = run.get("assignment") or {}
    values = raw.get("values", raw) if isinstance(raw, dict) else {}
    out: dict[str, list[int]] = {}
    for kid, v in values.items():
        kind, _, site = str(kid).partition(":")
        if kind == "weight_bits":
            out.setdefault(site.rpartition(".")[0], [32, 32])[0] = int(v)
        elif kind == "act_bits":
            out.setdefault(site, [32, 32])[1] = int(v)
    return {k: (w, a) for k, (w, a) in out.items() if min(w, a) < 32}


def plot_bits(run: dict[str, Any], path: Path) -> bool:
    """Weight and activation bits per layer, with the layer's kept share of its output units; False
    (no file) when nothing is quantized."""
    bits = layer_bits(run)
    if not bits:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(bits)
    xs = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4))
    ax.bar(
        [x - 0.2 for x in xs], [bits[n][0] for n in names], width=0.4, label="weight bits", color="#3b7dd8"
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [bits[n][1] for n in names],
        width=0.4,
        label="activation bits",
        color="#f28e2b",
    )
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("bits")
    ax.set_title(f"bits per layer ({run.get('method', '')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def plot_accuracy_flops(runs: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against FLOPs: one line per method and base model (runs on other bases are never joined),
    points in FLOPs order, each labelled with its run; failed runs are left out by the caller."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines: dict[tuple[str, float], list[tuple[float, float, str]]] = {}
    dense_points: dict[float, float] = {}
    for r in runs:
        acc = r["compressed"].get("test_accuracy", r["compressed"].get("accuracy"))
        if acc is None:
            continue
        base = float(r["dense"]["flops"])
        name = run_name(r)
        lines.setdefault((r.get("method", "?"), base), []).append(
            (r["compressed"]["flops"] / 1e6, 100 * acc, name)
        )
        dense_acc = r["dense"].get("test_accuracy", r["dense"].get("accuracy"))
        if dense_acc is not None:
            dense_points[base] = 100 * dense_acc
    several_bases = len({base for _, base in lines}) > 1
    for (method, base), points in sorted(lines.items()):
        points.sort()
        label = f"{method} (dense {base / 1e6:.0f} MFLOPs)" if several_bases else method
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
        for x, y, name in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for i, (base, acc) in enumerate(sorted(dense_points.items())):
        ax.scatter([base / 1e6], [acc], marker="*", s=150, color="black", label="dense" if i == 0 else None)
    ax.set_xlabel("MFLOPs (multiply-add = 2)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_report(dirs: list[str | Path], out: str | Path) -> Path:
    """Write `out/report.md` with `widths.png` and `accuracy_flops.png`; returns the markdown path."""
    all_runs = read_runs([Path(d) for d in dirs])
    runs = [r for r in all_runs if failure(r) is None]
    left_out = [f"{run_name(r)} ({failure(r)})" for r in all_runs if failure(r) is not None]
    if not runs:
        raise ConfigError(f"no run to report: every run failed: {'; '.join(left_out)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_widths(runs[0], out / "widths.png")
    plot_accuracy_flops(runs, out / "accuracy_flops.png")
    has_bits = plot_bits(runs[0], out / "bits.png")
    lines = [
        "# netdiet compression report",
        "",
        table(runs),
        "",
        "Accuracy is on the held-out validation split; test accuracy on the reported split. FLOPs are exact "
        "(analytic, equal to torch.utils.flop_counter) per example; latency is the median of repeated runs "
        "(PyTorch eager CPU, and ONNX Runtime CPU for fp32 ONNX exports) measured in the same process.",
        "",
        *[
            f"- equal-training control for {run_name(r)}: {r['control']['what']}: val "
            f"{_fmt(r['control'].get('accuracy'), 0.01, 1)}, test {_fmt(r['control'].get('test_accuracy'), 0.01, 1)}"
            for r in runs
            if r.get("control")
        ],
        *[f"- {note}" for note in slower_exports(runs)],
        *([f"- left out (failed): {', '.join(left_out)}"] if left_out else []),
        "",
        "## Kept units per group",
        "",
        "![kept widths](widths.png)",
        "",
        "## Accuracy against FLOPs",
        "",
        "![accuracy vs flops](accuracy_flops.png)",
        "",
    ]
    if has_bits:
        bits = layer_bits(runs[0])
        lines += [
            "## Bits per layer",
            "",
            f"BOPs relative to fp32 x fp32: {_fmt(runs[0]['compressed'].get('bops'), 1, 0)} / "
            f"{_fmt(runs[0]['dense'].get('bops'), 1, 0)} = "
            f"{_fmt(runs[0]['compressed'].get('bops', 0) / max(1.0, runs[0]['dense'].get('bops', 1)), 1, 4)}.",
            "",
            "![bits per layer](bits.png)",
            "",
            "| layer | weight bits | activation bits |",
            "|---|---|---|",
            *[f"| {n} | {w} | {a} |" for n, (w, a) in bits.items()],
            "",
        ]
    budgeted = [r for r in runs if r.get("latency")]
    if budgeted:
        lines += [
            "## Latency on the budget's runtime",
            "",
            "| run | backend | batch | predicted ms dense -> slim | measured ms dense -> slim | measured ratio |",
            "|---|---|---|---|---|---|",
        ]
        for r in budgeted:
            lat = r["latency"]
            lines.append(
                f"| {run_name(r)} | {lat['backend']} | {lat['batch']} "
                f"| {_fmt(lat['predicted_dense_ms'], 1, 3)} -> {_fmt(lat['predicted_ms'], 1, 3)} "
                f"| {_fmt(lat['measured_dense_ms'], 1, 3)} -> {_fmt(lat['measured_ms'], 1, 3)} "
                f"| {_fmt(lat['measured_ratio'], 1, 2)}x |"
            )
        lines.append("")
    first = Path(runs[0]["_dir"])
    trace = read_trace(first)
    if trace and "stage" in trace[-1]:
        plot_staged_trace(trace, out / "dynamics.png")
        dyn = runs[0].get("dynamics", {})
        starts = ", ".join(f"{k} at step {v}" for k, v in dyn.get("stage_starts", {}).items())
        lines += [
            "## Training stages",
            "",
            f"{len(trace)} steps ({starts}); largest bit-bound violation {_fmt(dyn.get('max_bound_violation'), 1, 4)}.",
            "",
            "![stages](dynamics.png)",
            "",
        ]
    elif trace and "lam" in trace[-1]:
        plot_trace(trace, out / "dynamics.png")
        dyn = runs[0].get("dynamics", {})
        lines += [
            "## Gated phase",
            "",
            f"{len(trace)} gated steps; relaxed cost / dense when the setting was fixed "
            f"{_fmt(dyn.get('cost_ratio_at_hardening'), 1, 3)} for a budget of {_fmt(dyn.get('budget_ratio'), 1, 3)}.",
            "",
            "![gated phase](dynamics.png)",
            "",
        ]
        snapshots = read_snapshots(first)
        if snapshots:
            plot_gate_histograms(snapshots, out / "gates.png")
            lines += [
                "Gate values (each divided by its group's largest) over the gated phase:",
                "",
                "![gates](gates.png)",
                "",
            ]
    costed = [r for r in runs if r.get("search_cost")]
    if costed:
        lines += [
            "## Search cost",
            "",
            "| run | method | search s | of which scoring s | sub-networks scored | training s | fine-tune s | device |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in costed:
            c = r["search_cost"]
            lines.append(
                f"| {run_name(r)} | {r.get('method', '?')} | {_fmt(c.get('search_s'), 1, 1)} "
                f"| {_fmt(c.get('evaluation_s'), 1, 1)} | {c.get('evaluations', 0)} | {_fmt(c.get('train_s'), 1, 1)} "
                f"| {_fmt(c.get('finetune_s'), 1, 1)} | {c.get('device', '?')} |"
            )
        lines.append("")
    factorized = runs[0].get("factorized") or {}
    if factorized:
        lines += ["## Factorised layers", "", "| layer | rank |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in factorized.items()] + [""]
    md = out / "report.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(md)
    return md
