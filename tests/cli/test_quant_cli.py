"""`netdiet compress --budget bops=...` and `netdiet export --int8` from a `netdiet train` run."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import netdiet
from netdiet.cli.main import main
from netdiet.quant import quantized_layers

pytest.importorskip("onnxruntime")


def test_compress_to_a_bops_budget_writes_the_int8_file_and_a_quantized_model_that_loads(
    dense_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "q"
    argv = ["compress", "--checkpoint", str(dense_run), "--budget", "bops=0.1", "--method", "ptq"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["bits"] == 8 and report["compressed"]["bops"] <= 0.1 * report["dense"]["bops"]
    assert report["compressed"]["onnx_int8_kernels"]["QLinearConv"] >= 1
    assert report["compressed"]["onnxruntime_ms_b64"] > 0 and (out / "model.int8.onnx").is_file()
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    base = json.loads((out / "base.json").read_text())
    loaded = netdiet.load(out, netdiet.zoo.build(base["model"], **base["model_config"]))
    assert quantized_layers(loaded)
    dense, small = report["dense"]["test_accuracy"], report["compressed"]["test_accuracy"]
    assert abs(small - dense) <= 0.05  # 8 bits everywhere: the fake-quant model is the float one, nearly


def test_export_int8_of_a_float_run_quantizes_it_post_training(
    dense_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "m.int8.onnx"
    assert main(["export", "--checkpoint", str(dense_run), "--int8", "--out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["int8"] and record["quantized_here"] and out.is_file()
    assert record["int8_kernels"]["QLinearConv"] >= 1 and record["max_rel_error"] < 0.05
    fp32 = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(dense_run), "--out", str(fp32)]) == 0
    assert out.stat().st_size < 0.6 * fp32.stat().st_size  # int8 weights; the graph itself is not smaller


def test_compress_refuses_bits_out_of_range(dense_run: Path, tmp_path: Path, capsys) -> None:
    argv = ["compress", "--checkpoint", str(dense_run), "--budget", "bops=0.1", "--bits", "1"]
    assert main([*argv, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--bits must be in [2, 32]" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_compress_with_geta_to_a_bops_budget_learns_bits_and_saves_a_model_that_loads(
    dense_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "g"
    argv = ["compress", "--checkpoint", str(dense_run), "--budget", "bops=0.05", "--method", "geta"]
    opts = ["--method-opt", "weight_bits=[4,8]", "--method-opt", "pruning_periods=3"]
    assert (
        main([*argv, *opts, "--epochs", "1", "--finetune-epochs", "0.2", "--out", str(out), "--no-progress"])
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["compressed"]["bops"] <= 0.05 * report["dense"]["bops"] * (1 + 1e-9)
    assert report["dynamics"]["max_bound_violation"] <= 1e-3
    assignment = report["assignment"]["values"] if "values" in report["assignment"] else report["assignment"]
    weight_bits = [v for k, v in assignment.items() if k.startswith("weight_bits:")]
    assert weight_bits and all(4 <= b <= 8 for b in weight_bits)
    assert (out / "model.int8.onnx").is_file()
    base = json.loads((out / "base.json").read_text())
    loaded = netdiet.load(out, netdiet.zoo.build(base["model"], **base["model_config"]))
    assert {q.weight_bits for q in quantized_layers(loaded).values()} == set(weight_bits)
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Bits per layer" in md and "## Training stages" in md and "cooldown at step" in md
    assert (tmp_path / "rep" / "bits.png").stat().st_size > 0 and (
        tmp_path / "rep" / "dynamics.png"
    ).is_file()
    bad = [*argv, "--method-opt", "weight_bitz=[4,8]", "--out", str(tmp_path / "y"), "--no-progress"]
    assert main(bad) == 2 and not (tmp_path / "y").exists()  # a typo is refused, nothing written
    argv_bits = [*argv, "--bits", "8", "--out", str(tmp_path / "x"), "--no-progress"]
    assert main(argv_bits) == 2  # geta learns its bits: a fixed --bits is refused
