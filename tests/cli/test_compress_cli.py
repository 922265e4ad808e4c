"""`netdiet compress` from a `netdiet train` run directory, end to end on the digits data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import netdiet
from netdiet.cli.main import main

try:
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401

    HAVE_ORT = True
except ImportError:
    HAVE_ORT = False


@pytest.fixture(scope="module")
def slim_run(dense_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `netdiet compress` of the shared dense run, read by the tests below."""
    out = tmp_path_factory.mktemp("compress") / "slim"
    argv = [
        "compress",
        "--checkpoint",
        str(dense_run),
        "--budget",
        "flops=0.5",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--out",
        str(out),
        "--no-progress",
        *(["--onnx"] if HAVE_ORT else []),
    ]
    assert main(argv) == 0
    return out


def test_compress_cli_writes_model_report_and_loads_back(slim_run: Path) -> None:
    out = slim_run
    report = json.loads((out / "report.json").read_text())
    assert 0.49 <= report["compressed"]["flops"] / report["dense"]["flops"] <= 0.5
    assert "test_accuracy" in report["compressed"]
    if HAVE_ORT:
        assert (out / "model.onnx").is_file() and report["compressed"]["onnxruntime_ms_b1"] > 0
        assert not (out / "dense.onnx").exists()
    base = json.loads((out / "base.json").read_text())
    slim = netdiet.load(out, netdiet.zoo.build(base["model"], **base["model_config"]))
    x = torch.randn(2, 3, 16, 16)
    assert netdiet.measured_flops(slim, (x[:1],)) == pytest.approx(report["compressed"]["flops"])


def test_compress_cli_writes_the_gated_trace_and_the_report_plots_it(slim_run: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (slim_run / "metrics.jsonl").read_text().splitlines()]
    gated = [r for r in rows if r["kind"] == "gated_step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["kind"] for r in rows] == ["gated_step"] * len(gated) + ["epoch"] * len(epochs)
    assert len(epochs) == 2  # one gated epoch, one fine-tune epoch
    n = epochs[0]["step"]  # the gated epoch's optimizer steps
    report = json.loads((slim_run / "report.json").read_text())
    assert n > 0 and report["dynamics"]["gated_steps"] == n
    assert [r["step"] for r in gated] == list(range(1, n + 1))  # one line per gated step
    for r in gated:
        assert {"cost_ratio", "target_ratio", "lam", "task_loss", "loss"} <= r.keys()
        assert all(isinstance(r[k], float) for k in ("cost_ratio", "target_ratio", "lam", "task_loss"))
    assert gated[0]["cost_ratio"] == pytest.approx(1.0, abs=0.05)  # it started dense
    assert gated[-1]["target_ratio"] == pytest.approx(0.5)
    snapshots = json.loads((slim_run / "gates.json").read_text())
    assert snapshots[0]["step"] == 0 and snapshots[-1]["step"] == n and snapshots[0]["gates"]

    rep = tmp_path / "rep"
    assert main(["report", str(slim_run), "--out", str(rep)]) == 0
    for name in ("report.md", "widths.png", "accuracy_flops.png", "dynamics.png", "gates.png"):
        assert (rep / name).is_file() and (rep / name).stat().st_size > 0, name
    md = (rep / "report.md").read_text()
    assert "## Gated phase" in md and f"{n} gated steps" in md
    assert "(dynamics.png)" in md and "(gates.png)" in md


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "speed=2"], "unknown budget metric"),
        (["--budget", "flops=0.5", "--model", "vgg"], "does not match"),
    ],
)
def test_compress_cli_bad_input(
    dense_run: Path, tmp_path: Path, extra: list[str], message: str, capsys
) -> None:
    argv = ["compress", "--checkpoint", str(dense_run), "--out", str(tmp_path / "x"), "--no-progress", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
