"""`netdiet demo` (shortened) runs the whole job and `netdiet report` renders its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdiet.cli.main import main


def test_demo_writes_model_report_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--epochs", "1", "--compress-epochs", "1", "--finetune-epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "FLOPs" in printed
    report = json.loads((out / "report.json").read_text())
    assert 0.49 <= report["compressed"]["flops"] / report["dense"]["flops"] <= 0.5
    for name in ("recipe.json", "model.safetensors", "report.md", "widths.png", "accuracy_flops.png"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "| demo | l1l2 | flops=0.5 |" in md

    # the report command over a parent directory picks up every run below it
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()


def test_report_refuses_a_directory_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no report.json" in capsys.readouterr().err
