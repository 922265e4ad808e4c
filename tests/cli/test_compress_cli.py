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


def test_compress_cli_writes_model_report_and_loads_back(dense_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "slim"
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
        "--lambda-lr",
        "0.5",
        "--out",
        str(out),
        "--no-progress",
        *(["--onnx"] if HAVE_ORT else []),
    ]
    assert main(argv) == 0
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
