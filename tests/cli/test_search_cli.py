"""`netdiet compress --method amc|evolution|knapsack` from a `netdiet train` run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdiet.cli.main import main


@pytest.mark.parametrize(
    ("method", "opts"),
    [
        ("amc", ["episodes=5", "warmup=2", "hidden=16"]),
        (
            "evolution",
            [
                "population=6",
                "parents=2",
                "mutations=2",
                "crossovers=2",
                "generations=2",
                "predictor_samples=8",
            ],
        ),
        ("knapsack", ["pruning_steps=3"]),
    ],
)
def test_compress_with_a_search_method_meets_the_budget_and_reports_its_cost(
    dense_run: Path, tmp_path: Path, method: str, opts: list[str]
) -> None:
    out = tmp_path / method
    argv = ["compress", "--checkpoint", str(dense_run), "--budget", "flops=0.5", "--method", method]
    for o in opts:
        argv += ["--method-opt", o]
    if method == "knapsack":
        argv += ["--epochs", "1"]
    assert main([*argv, "--finetune-epochs", "0.2", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["compressed"]["flops"] <= 0.5 * report["dense"]["flops"] * (1 + 1e-9)
    assert report["search_cost"]["search_s"] >= 0 and "finetune_s" in report["search_cost"]
    if method != "knapsack":
        assert report["search_cost"]["evaluations"] >= 1
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Search cost" in md and f"| {method} |" in md
