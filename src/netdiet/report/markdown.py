"""`netdiet report`: a markdown report with plots from one or more compression run directories.

Each run directory holds `report.json` (written by `netdiet compress` or the benchmarks). The report
shows the before/after table, kept widths per group (bar chart) and accuracy against FLOPs over runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netdiet.errors import ConfigError
from netdiet.report.dynamics import plot_gate_histograms, plot_trace, read_snapshots, read_trace


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


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| run | method | budget | accuracy dense -> slim | test acc dense -> slim | MFLOPs dense -> slim | params (K) | latency b1 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        d, c = r["dense"], r["compressed"]
        budget = ", ".join(f"{k}={v}" for k, v in r.get("budget", {}).items())
        rows.append(
            f"| {Path(r['_dir']).name} | {r.get('method', '?')} | {budget} | {_fmt(d.get('accuracy'), 0.01, 1)} -> {_fmt(c.get('accuracy'), 0.01, 1)} "
            f"| {_fmt(d.get('test_accuracy'), 0.01, 1)} -> {_fmt(c.get('test_accuracy'), 0.01, 1)} "
            f"| {_fmt(d['flops'], 1e6)} -> {_fmt(c['flops'], 1e6)} | {_fmt(d['params'], 1e3, 1)} -> {_fmt(c['params'], 1e3, 1)} "
            f"| {_fmt(d.get('latency_ms_b1'))} -> {_fmt(c.get('latency_ms_b1'))} |"
        )
    return "\n".join(rows)


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


def plot_accuracy_flops(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    by_method: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        acc = r["compressed"].get("test_accuracy", r["compressed"].get("accuracy"))
        if acc is None:
            continue
        by_method.setdefault(r.get("method", "?"), []).append((r["compressed"]["flops"] / 1e6, 100 * acc))
    for method, points in sorted(by_method.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, "o-", label=method)
    dense = runs[0]["dense"]
    acc = dense.get("test_accuracy", dense.get("accuracy"))
    if acc is not None:
        ax.scatter([dense["flops"] / 1e6], [100 * acc], marker="*", s=150, color="black", label="dense")
    ax.set_xlabel("MFLOPs (multiply-add = 2)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_report(dirs: list[str | Path], out: str | Path) -> Path:
    """Write `out/report.md` with `widths.png` and `accuracy_flops.png`; returns the markdown path."""
    runs = read_runs([Path(d) for d in dirs])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_widths(runs[0], out / "widths.png")
    plot_accuracy_flops(runs, out / "accuracy_flops.png")
    lines = [
        "# netdiet compression report",
        "",
        table(runs),
        "",
        "Accuracy is on the held-out validation split; test accuracy on the reported split. FLOPs are exact "
        "(analytic, equal to torch.utils.flop_counter) per example; latency is the median of repeated "
        "PyTorch CPU runs measured in the same process.",
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
    first = Path(runs[0]["_dir"])
    trace = read_trace(first)
    if trace:
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
    factorized = runs[0].get("factorized") or {}
    if factorized:
        lines += ["## Factorised layers", "", "| layer | rank |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in factorized.items()] + [""]
    md = out / "report.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(md)
    return md
