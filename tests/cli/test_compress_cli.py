"""`netdiet compress` from a `netdiet train` run directory, end to end on the digits data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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
        (["--budget", "flops=1.5"], "above 1, so it is not a fraction"),
        (["--budget", "flops=0.5", "--method", "uniform", "--epochs", "2"], "uniform is one-shot"),
        (["--budget", "flops=0.5", "--method", "magnitude", "--no-lowrank"], "--no-lowrank does not apply"),
        (["--budget", "flops=0.5", "--latency-batch", "64"], "--latency-batch applies to latency budgets"),
        (
            ["--budget", "latency=0.6", "--latency-table", "no/such/table.json"],
            "does not exist; check the path",
        ),
        (["--budget", "flops=0.5", "--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_compress_cli_bad_input(
    dense_run: Path, tmp_path: Path, extra: list[str], message: str, capsys
) -> None:
    argv = ["compress", "--checkpoint", str(dense_run), "--out", str(tmp_path / "x"), "--no-progress", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither --out nor a staging folder


def _compress(dense_run: Path, out: Path, *extra: str) -> int:
    argv = ["compress", "--checkpoint", str(dense_run), "--budget", "flops=0.5", "--epochs", "0.5"]
    return main(
        [*argv, "--finetune-epochs", "2", "--subset", "256", "--out", str(out), "--no-progress", *extra]
    )


def test_out_is_complete_or_absent_and_never_keeps_stale_files(
    dense_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "slim"
    assert _compress(dense_run, out, "--json") == 0
    files = sorted(p.name for p in out.iterdir())
    assert {"recipe.json", "model.safetensors", "report.json", "metrics.jsonl", "base.json"} <= set(files)
    assert not (out / "state").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["slim"]
    printed = json.loads(capsys.readouterr().out)
    assert (
        printed["compressed"]["flops"] == json.loads((out / "report.json").read_text())["compressed"]["flops"]
    )

    assert _compress(dense_run, out) == 2  # an existing result is refused ...
    assert "--overwrite" in capsys.readouterr().err
    (out / "stale.onnx").write_text("from an earlier run")
    assert _compress(dense_run, out, "--overwrite") == 0  # ... and replaced whole
    assert not (out / "stale.onnx").exists()
    assert "netdiet compress: l1l2 to flops=0.5" in capsys.readouterr().out  # a line per phase, a table
    assert main(["eval", "--checkpoint", str(out), "--json"]) == 0  # a compressed run evaluates
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    report = json.loads((out / "report.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(report["compressed"]["test_accuracy"])


def test_interrupted_compress_resumes_into_the_same_out(
    dense_run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import importlib

    compress_module = importlib.import_module("netdiet.compress")
    reference = tmp_path / "reference"
    assert _compress(dense_run, reference) == 0
    real_fit = compress_module.fit_inplace

    def stop_after_first_finetune_epoch(*args, **kwargs):
        if kwargs.get("run_dir") is None:
            return real_fit(*args, **kwargs)

        def stop(epoch, record):
            raise KeyboardInterrupt

        return real_fit(*args, callbacks=[stop], **kwargs)

    out = tmp_path / "slim"
    monkeypatch.setattr(compress_module, "fit_inplace", stop_after_first_finetune_epoch)
    with pytest.raises(KeyboardInterrupt):
        _compress(dense_run, out)
    monkeypatch.setattr(compress_module, "fit_inplace", real_fit)
    assert not out.exists() and (tmp_path / ".slim.partial" / "state" / "gated" / "state.json").is_file()
    assert _compress(dense_run, out) == 2 and "--resume" in capsys.readouterr().err
    assert _compress(dense_run, out, "--resume") == 0
    assert not (tmp_path / ".slim.partial").exists()
    a = load_file(out / "model.safetensors")
    b = load_file(reference / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _compress(dense_run, out, "--resume") == 2  # nothing left to resume
    assert "no interrupted run" in capsys.readouterr().err


def test_the_summary_table_flags_an_export_slower_than_dense() -> None:
    from netdiet.cli.compress import summary_rows

    report = {
        "dense": {
            "accuracy": 0.8,
            "flops": 2e6,
            "params": 2e3,
            "onnxruntime_ms_b64": 36.0,
            "latency_ms_b1": 1.0,
        },
        "compressed": {
            "accuracy": 0.7,
            "flops": 1e6,
            "params": 1e3,
            "onnxruntime_ms_b64": 45.0,
            "latency_ms_b1": 0.6,
        },
    }
    rows = {name: (a, b, note) for name, a, b, note in summary_rows(report)}
    assert rows["val accuracy (%)"] == (80.0, 70.0, "-10.00")
    assert rows["onnxruntime ms, batch 64"][2] == "1.25x  SLOWER than dense"
    assert rows["PyTorch ms, batch 1"][2] == "0.60x" and rows["FLOPs (M)"][2] == "0.500x"
