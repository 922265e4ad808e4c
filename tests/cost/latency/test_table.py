"""The latency table file: JSON round trip, every kind of corrupt file, and the environment check."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from netdiet.cost.latency import Grid, LatencyTable, LayerSignature, TableEntry, make_backend
from netdiet.errors import LatencyTableError
from netdiet.profiling import check_table_here

CONV = LayerSignature(
    "conv", kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), in_spatial=(16, 16)
)
DW = LayerSignature(
    "dwconv", kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), in_spatial=(8, 8)
)


def make_table() -> LatencyTable:
    """A hand-made table with every optional field set: unaligned grid, probe record, calibration."""
    env = make_backend("synthetic").env(batch=2)
    conv = TableEntry(
        CONV,
        Grid([1, 8, 16], [1, 8, 16, 32], [[0.1, 0.2, 0.3, 0.5], [0.2, 0.4, 0.6, 1.0], [0.3, 0.6, 0.9, 1.5]]),
        multiple=8,
        unaligned=Grid([1, 7, 15], [1, 7, 15, 31], [[0.2] * 4, [0.3] * 4, [0.4, 0.5, 0.6, 0.7]]),
        probe={"8": {"at_multiple": [8, 16], "fewer": [4, 12], "pays": True}},
    )
    dw = TableEntry(DW, Grid([1, 8, 16, 24], None, [0.01, 0.02, 0.04, 0.05]))
    calibration = {"abc123": {"scale": 1.1, "unaligned_ms": 0.02, "overhead_ms": -0.3, "seed": 0}}
    return LatencyTable(
        env=env,
        protocol={"warmup": 5, "repeats": 25},
        entries={CONV.key(): conv, DW.key(): dw},
        calibration=calibration,
        netdiet_version="9.9",
    )


def test_save_load_round_trip_keeps_entries_env_and_calibration(tmp_path: Path) -> None:
    table = make_table()
    path = table.save(tmp_path / "t.json")
    again = LatencyTable.load(path)
    assert again.env == table.env and again.env["backend"] == "synthetic"
    assert again.calibration == table.calibration
    assert again.protocol == table.protocol
    assert again.netdiet_version == "9.9"
    assert set(again.entries) == {CONV.key(), DW.key()}
    for key, entry in table.entries.items():
        loaded = again.entries[key]
        assert loaded.signature == entry.signature  # tuples come back as tuples, not lists
        assert loaded.grid == entry.grid
        assert loaded.multiple == entry.multiple
        assert loaded.unaligned == entry.unaligned
        assert loaded.probe == entry.probe
    assert again.entries[DW.key()].out_points is None
    assert again.to_dict() == table.to_dict()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left over


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def _mutated(change: Any) -> dict[str, Any]:
    data = make_table().to_dict()
    change(data)
    return data


def _set_conv_ms(value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        data["layers"][CONV.key()]["ms"][1][2] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(version=2), "table version 2"),
        (lambda d: d.pop("format"), "is not a netdiet latency table"),
        (lambda d: d["env"].pop("threads"), "env must record"),
        (lambda d: d.update(layers=[1, 2]), "'layers' must be an object"),
        (_set_conv_ms(-0.5), "positive finite numbers, got -0.5"),
        (_set_conv_ms(0.0), "positive finite numbers, got 0.0"),
        (_set_conv_ms(math.nan), "positive finite numbers, got nan"),
        (_set_conv_ms("fast"), "positive finite numbers, got 'fast'"),
        (lambda d: d["layers"][CONV.key()]["ms"][0].pop(), "every ms row must have 4 values"),
        (lambda d: d["layers"][CONV.key()]["ms"].pop(), "one entry per in_point"),
        (lambda d: d["layers"][CONV.key()].update(in_points=[1, 16, 8]), "in_points must be increasing"),
        (lambda d: d["layers"][CONV.key()].pop("in_points"), "missing or malformed"),
        (lambda d: d["layers"][DW.key()]["ms"].__setitem__(0, -1), "positive finite numbers, got -1"),
        (lambda d: d["layers"][CONV.key()]["unaligned"]["ms"][0].pop(), r"\(unaligned\): every ms row"),
        (lambda d: d.update(calibration=[1]), "'calibration' must be an object"),
    ],
)
def test_corrupt_tables_are_refused_with_the_problem_named(change: Any, message: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.json", _mutated(change))
    with pytest.raises(LatencyTableError, match=message) as info:
        LatencyTable.load(path)
    # file-level problems name the file, grid problems the layer
    assert str(path) in str(info.value) or "layer '" in str(info.value)


def test_layer_errors_name_the_layer(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.json", _mutated(_set_conv_ms(-1.0)))
    with pytest.raises(LatencyTableError, match=f"layer '{CONV.key()}'"):
        LatencyTable.load(path)


def test_nan_written_by_json_dumps_is_refused(tmp_path: Path) -> None:
    # json.dumps writes NaN (not valid JSON, but Python reads it back): the value check must catch it
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(_mutated(_set_conv_ms(float("nan")))))
    assert "NaN" in path.read_text()
    with pytest.raises(LatencyTableError, match="positive finite"):
        LatencyTable.load(path)


def test_truncated_file_is_refused_as_invalid_json(tmp_path: Path) -> None:
    path = make_table().save(tmp_path / "t.json")
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(LatencyTableError, match="not valid JSON.*truncated"):
        LatencyTable.load(path)


@pytest.mark.parametrize("content", ['{"format": "something-else", "version": 1}', "[1, 2, 3]", '"x"'])
def test_json_that_is_not_a_table_is_refused(content: str, tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(content)
    with pytest.raises(LatencyTableError, match="is not a netdiet latency table.*netdiet profile"):
        LatencyTable.load(path)


def test_missing_file_is_refused_naming_how_to_make_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(LatencyTableError, match="does not exist.*netdiet profile"):
        LatencyTable.load(path)


@pytest.mark.parametrize(
    "field, value",
    [
        ("device", "Some Other CPU (aarch64)"),
        ("runtime", {"netdiet-synthetic": "2"}),
        ("threads", 4),
        ("batch", 64),
        ("dtype", "float16"),
        ("backend", "torch"),
    ],
)
def test_check_env_refuses_another_environment_unless_forced(field: str, value: Any) -> None:
    table = make_table()
    here = dict(table.env)
    table.check_env(here)  # the same environment passes
    assert table.mismatches(here) == []
    here[field] = value
    diff = table.mismatches(here)
    assert len(diff) == 1 and diff[0].startswith(f"{field}: ")
    with pytest.raises(LatencyTableError, match=f"another environment \\({field}: table"):
        table.check_env(here)
    table.check_env(here, force=True)


def test_check_table_here_refuses_a_cuda_table_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    table = make_table()
    table.env = {**table.env, "backend": "cuda", "device": "NVIDIA H100", "runtime": {"cuda": "12.4"}}
    with pytest.raises(LatencyTableError, match="backend 'cuda', which cannot run here"):
        check_table_here(table)
    check_table_here(table, force=True)


def test_check_table_here_compares_with_this_machine() -> None:
    table = make_table()
    check_table_here(table)  # synthetic: the same "device" everywhere
    table.env = {**table.env, "runtime": {"netdiet-synthetic": "0"}}
    with pytest.raises(LatencyTableError, match="runtime: table"):
        check_table_here(table)
    check_table_here(table, force=True)
