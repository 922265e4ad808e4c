"""Plots of a gated phase: relaxed cost against its scheduled target and the budget, lambda, task loss,
and how the gates of every group were distributed at a few points of the run.

Reads what `netdiet compress` writes (metrics.jsonl: one record per gated step; gates.json: snapshots),
so it knows nothing about the method that produced them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_trace(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == "gated_step"]


def read_snapshots(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "gates.json"
    return json.loads(path.read_text()) if path.is_file() else []


def plot_trace(trace: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from netdiet.report.markdown import save_figure

    steps = [t["step"] for t in trace]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax.plot(steps, [t["cost_ratio"] for t in trace], label="relaxed cost / dense")
    ax.plot(steps, [t.get("target_ratio") for t in trace], "--", label="scheduled target")
    ax.axhline(trace[-1]["budget_ratio"], color="k", lw=0.8, label="budget")
    hard = [t["step"] for t in trace if t.get("phase") == "harden"]
    if hard:
        ax.axvspan(hard[0], steps[-1], color="0.9", label="hardening")
    ax.set_xlabel("gated step")
    ax.legend(fontsize=8)
    ax2.plot(steps, [t["lam"] for t in trace], color="C2")
    ax2.set_ylabel("lambda", color="C2")
    ax2.set_xlabel("gated step")
    if any("task_loss" in t for t in trace):
        ax3 = ax2.twinx()
        ax3.plot(steps, [t.get("task_loss", float("nan")) for t in trace], color="C3", alpha=0.6)
        ax3.set_ylabel("task loss", color="C3")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_staged_trace(trace: list[dict[str, Any]], path: Path) -> None:
    """A staged method's run: the upper bit bounds and mean bits per step, stages shaded, the number of
    units chosen as redundant on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from netdiet.report.markdown import save_figure

    steps = [t["step"] for t in trace]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for key, style in (
        ("b_max_weight", "--"),
        ("b_max_act", ":"),
        ("mean_weight_bits", "-"),
        ("mean_act_bits", "-"),
    ):
        if key in trace[-1]:
            ax.plot(steps, [t[key] for t in trace], style, label=key.replace("_", " "))
    colours = {"warmup": "0.95", "projection": "#e8f0fb", "joint": "#fdf0e4", "cooldown": "#eaf5ea"}
    top = max(float(t.get("b_max_weight", 0.0)) for t in trace) or 8.0
    start = 0
    for i in range(1, len(trace) + 1):
        if i == len(trace) or trace[i]["stage"] != trace[start]["stage"]:
            stage = str(trace[start]["stage"])
            ax.axvspan(steps[start], steps[i - 1], color=colours.get(stage, "0.9"), zorder=0)
            ax.text(steps[start], top, stage, fontsize=7, va="bottom")
            start = i
    ax.set_xlabel("step")
    ax.set_ylabel("bits")
    ax.legend(fontsize=7, loc="center left")
    if "redundant_units" in trace[-1]:
        ax2 = ax.twinx()
        ax2.plot(steps, [t["redundant_units"] for t in trace], color="C3", alpha=0.6)
        ax2.set_ylabel("redundant units", color="C3")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_gate_histograms(snapshots: list[dict[str, Any]], path: Path) -> None:
    """One panel per snapshot: every gate divided by its group's largest, so groups share one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from netdiet.report.markdown import save_figure

    fig, axes = plt.subplots(1, len(snapshots), figsize=(2.6 * len(snapshots), 2.8), sharey=True)
    axes = axes if len(snapshots) > 1 else [axes]
    for ax, snap in zip(axes, snapshots):
        values = []
        for gates in snap["gates"].values():
            top = max(max(gates), 1e-12)
            values += [g / top for g in gates]
        ax.hist(values, bins=20, range=(0, 1), color="#3b7dd8")
        ax.set_title(f"step {snap['step']}", fontsize=9)
        ax.set_xlabel("gate / group max", fontsize=8)
    axes[0].set_ylabel("units")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
