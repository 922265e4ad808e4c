"""`netdiet profile` (table, calibration, validation, resume, corrupt tables) and `netdiet compress` with a
latency budget, both on the synthetic backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdiet import zoo
from netdiet.cli.main import main
from netdiet.cost.latency import LatencyModel, LatencyTable, layer_needs
from netdiet.cost.latency.backends import SyntheticBackend
from netdiet.space import analyze


def profile_argv(out: Path, *extra: str) -> list[str]:
    return [
        "profile",
        "resnet20",
        "--backend",
        "synthetic",
        "--batch",
        "4",
        "--out",
        str(out),
        "--calibrate",
        "3",
        "--validate",
        "2",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def resnet20_space():  # type: ignore[no-untyped-def]
    return analyze(zoo.build("resnet20"), tuple(zoo.example_inputs("resnet20", batch_size=1)))


def test_profile_writes_a_calibrated_validated_table_and_resumes_as_a_no_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, resnet20_space
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r20.json"
    assert main(profile_argv(out)) == 0
    summary = json.loads(capsys.readouterr().out)
    table = LatencyTable.load(out)
    assert table.env["backend"] == "synthetic" and table.batch == 4 and table.env["threads"] == 1
    assert table.protocol["repeats"] == 25
    assert set(table.entries) == {n.key for n in layer_needs(resnet20_space)}
    latency = LatencyModel(resnet20_space, table)  # covers the model: no LatencyTableError
    assert latency.calibrated
    cal = table.calibration[latency.fingerprint]
    assert len(cal["fit"]) == 1 + 3  # the dense model and 3 variants
    assert cal["scale"] > 0 and cal["model"] == "ResNetCifar"
    validation = cal["validation"]
    assert (
        len(validation["variants"]) == 2 and validation["backend"] == "synthetic" and validation["batch"] == 4
    )
    assert validation["max_abs_error"] >= validation["median_abs_error"] >= 0
    assert summary["table"] == str(out) and summary["layer_shapes"] == len(table.entries)
    assert summary["dense_predicted_ms"] == pytest.approx(latency.predict_keep(None))
    assert summary["calibration"]["scale"] == pytest.approx(cal["scale"])
    assert summary["validation"]["median_abs_error"] == pytest.approx(validation["median_abs_error"])

    # the same command again: every shape is in the table and the model is calibrated, nothing is re-timed
    timed: list[str] = []
    original = SyntheticBackend.time_layer

    def counting(self, sig, batch, c_in, c_out):  # type: ignore[no-untyped-def]
        timed.append(sig.key())
        return original(self, sig, batch, c_in, c_out)

    monkeypatch.setattr(SyntheticBackend, "time_layer", counting)
    before = json.loads(out.read_text())
    assert main(profile_argv(out)) == 0
    capsys.readouterr()
    after = json.loads(out.read_text())
    assert timed == []
    assert after["layers"] == before["layers"] and after["env"] == before["env"]
    fit = {k: v for k, v in after["calibration"][latency.fingerprint].items() if k != "validation"}
    assert fit == {k: v for k, v in cal.items() if k != "validation"}  # not re-fitted


def test_profile_refuses_a_corrupt_table_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bad.json"
    out.write_text('{"format": "netdiet-latency-table", "version": 1, "env": {')
    assert main(profile_argv(out)) == 2
    captured = capsys.readouterr()
    assert "netdiet profile: error:" in captured.err and "not valid JSON" in captured.err
    assert str(out) in captured.err
    assert out.read_text().endswith('"env": {')  # left as it was, not overwritten


def test_profile_refuses_a_table_from_another_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b4.json"
    argv = profile_argv(out)
    argv[argv.index("--calibrate") + 1] = "0"
    argv[argv.index("--validate") + 1] = "0"
    assert main(argv) == 0
    capsys.readouterr()
    before = out.read_text()
    argv[argv.index("--batch") + 1] = "8"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "other settings than asked for" in err and "batch: table 4, asked 8" in err
    assert main([*argv, "--threads", "2"]) == 2
    assert "threads: table 1, asked 2" in capsys.readouterr().err
    assert out.read_text() == before
    # forced: the table is used as it was measured
    assert main([*argv, "--force-table"]) == 0
    assert json.loads(capsys.readouterr().out)["env"]["batch"] == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--validate", "2", "--calibrate", "0"], "give --calibrate N > 0"),
        (["--batch", "0"], "--batch and --threads must be >= 1"),
    ],
)
def test_profile_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = profile_argv(tmp_path / "t.json") + extra
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


# ----- netdiet compress --budget latency= -------------------------------------------------------------


def test_compress_cli_with_a_latency_budget_profiles_and_reports_latency(
    dense_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "slim"
    argv = [
        "compress",
        "--checkpoint",
        str(dense_run),
        "--budget",
        "latency=0.6",
        "--latency-backend",
        "synthetic",
        "--subset",
        "128",
        "--epochs",
        "1",
        "--finetune-epochs",
        "0",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["budget"] == {"latency": 0.6}
    lat = report["latency"]
    assert lat["backend"] == "synthetic" and lat["batch"] == 1 and lat["calibrated"] is True
    assert 0 < lat["predicted_ratio"] <= 0.6
    assert lat["predicted_ratio"] == pytest.approx(lat["predicted_ms"] / lat["predicted_dense_ms"])
    assert 0 < lat["measured_ms"] < lat["measured_dense_ms"]
    # the budget checked on the clock too (the synthetic backend times what the table predicts)
    check = lat["budget_check"]
    assert check["relative"] and check["limit"] == 0.6 and check["met"] is True
    assert check["measured"] == pytest.approx(lat["measured_ratio"])
    assert [f["met"] for f in report["latency_fixups"]] == [True]  # measured once, nothing to tighten
    table_path = out / "latency_table.json"
    assert table_path.is_file()
    table = LatencyTable.load(table_path)
    assert table.backend == "synthetic" and table.batch == 1 and table.calibration

    # a corrupt --latency-table is an error the user can act on, not a traceback
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    argv_bad = [*argv[:-3], "--latency-table", str(bad), "--out", str(tmp_path / "x"), "--no-progress"]
    assert main(argv_bad) == 2
    assert "is not a netdiet latency table" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_profile_int8_adds_the_precision_axis_calibrated_and_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], resnet20_space
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r20-int8.json"
    assert main(profile_argv(out, "--int8")) == 0
    summary = json.loads(capsys.readouterr().out)
    table = LatencyTable.load(out)
    assert table.precisions == ("fp32", "int8") and summary["precisions"] == ["fp32", "int8"]
    latency = LatencyModel(resnet20_space, table)
    assert latency.is_calibrated("fp32") and latency.is_calibrated("int8")
    assert summary["int8_predicted_ms"] < summary["dense_predicted_ms"]
    assert "validation_int8" in summary and "validation" in summary
    int8_cal = table.calibration[latency.calibration_key("int8")]
    assert int8_cal["precision"] == "int8" and len(int8_cal["validation"]["variants"]) == 2
    # an fp32 table is completed with the int8 axis in place, its fp32 entries kept
    plain = tmp_path / "plain.json"
    assert main(profile_argv(plain)) == 0
    before = LatencyTable.load(plain)
    capsys.readouterr()
    assert main(profile_argv(plain, "--int8")) == 0
    after = LatencyTable.load(plain)
    assert after.precisions == ("fp32", "int8")
    assert {k: e.grid for k, e in after.entries.items()} == {k: e.grid for k, e in before.entries.items()}
