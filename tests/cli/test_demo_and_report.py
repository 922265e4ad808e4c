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
    assert "test accuracy" in printed and "FLOPs" in printed and "vs equal training" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["control"]["epochs"] == 3 and 0 <= report["control"]["test_accuracy"] <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # staged, then renamed into place
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    # bops=0.03 at int8 (0.0625 of fp32 at full width): pruned to at most 0.03 / 0.0625 of the FLOPs
    assert report["bits"] == 8 and report["compressed"]["bops"] <= 0.03 * report["dense"]["bops"] * (1 + 1e-9)
    assert report["compressed"]["flops"] / report["dense"]["flops"] <= 0.03 / 0.0625 + 1e-9
    names = (
        "recipe.json",
        "model.safetensors",
        "model.int8.onnx",
        "report.md",
        "widths.png",
        "accuracy_flops.png",
    )
    for name in names:
        assert (out / name).is_file(), name
    assert "BOPs" in printed and "ONNX Runtime, batch 64" in printed and "ONNX file" in printed
    onnx = report["int8_onnx"]
    assert onnx["int8_kernels"]["QLinearConv"] >= 19 and onnx["int8_ms_b64"] > 0
    md = (out / "report.md").read_text()
    assert "| demo | l1l2 | bops=0.03 |" in md and "equal-training control" in md

    # the report command over a parent directory picks up every run below it
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()


def test_report_refuses_a_directory_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no report.json" in capsys.readouterr().err


def _fake_run(
    root: Path, name: str, flops: float, acc: float, dense_flops: float = 100e6, **lat: float
) -> Path:
    d = root / name
    d.mkdir(parents=True)
    dense = {"flops": dense_flops, "params": 1e5, "accuracy": 0.8, "test_accuracy": 0.8}
    comp = {"flops": flops, "params": 5e4, "accuracy": acc, "test_accuracy": acc}
    for key, value in lat.items():
        which, _, metric = key.partition("__")
        (dense if which == "dense" else comp)[metric] = value
    report = {"method": "l1l2", "budget": {"flops": flops / dense_flops}, "dense": dense, "compressed": comp}
    (d / "report.json").write_text(json.dumps(report))
    return d


def test_report_shows_the_target_runtime_flags_slower_exports_and_leaves_out_failed_runs(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    _fake_run(runs, "half", 50e6, 0.75, dense__onnxruntime_ms_b1=1.0, slim__onnxruntime_ms_b1=1.4,
              dense__onnxruntime_ms_b64=40.0, slim__onnxruntime_ms_b64=30.0)  # fmt: skip
    _fake_run(runs, "third", 30e6, 0.70)
    _fake_run(runs, "diverged", 30e6, float("nan"))
    _fake_run(runs, "other-base", 20e6, 0.6, dense_flops=40e6)
    assert main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "ORT b1 ms" in md and "ORT b64 ms" in md
    assert "half: the compressed model is SLOWER than dense on ORT b1" in md
    assert "1.00 -> 1.40 (slower)" in md and "40.00 -> 30.00 |" in md
    assert "left out (failed): diverged (compressed accuracy is nan)" in md
    assert "| diverged |" not in md and "| other-base |" in md
    assert (tmp_path / "rep" / "accuracy_flops.png").stat().st_size > 0


def test_the_accuracy_plot_joins_only_runs_of_one_method_and_base_in_flops_order(
    tmp_path: Path, monkeypatch
) -> None:
    from netdiet.report import markdown

    runs = tmp_path / "runs"
    for name, flops, base in (("b", 50e6, 100e6), ("a", 30e6, 100e6), ("c", 70e6, 100e6), ("x", 20e6, 40e6)):
        _fake_run(runs, name, flops, 0.7, dense_flops=base)
    drawn: list[tuple[list[float], str]] = []
    import matplotlib.axes

    real_plot = matplotlib.axes.Axes.plot

    def spy(self, xs, ys, fmt, label=None, **kw):
        drawn.append((list(xs), label))
        return real_plot(self, xs, ys, fmt, label=label, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    markdown.write_report([runs], tmp_path / "rep")
    assert drawn == [([20.0], "l1l2 (dense 40 MFLOPs)"), ([30.0, 50.0, 70.0], "l1l2 (dense 100 MFLOPs)")]


def test_report_of_only_failed_runs_is_a_clear_error_and_writes_nothing(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    _fake_run(runs, "diverged", 30e6, float("nan"))
    assert main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 2
    assert "every run failed: diverged (compressed accuracy is nan)" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()
