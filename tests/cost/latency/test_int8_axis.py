"""The latency table's precision axis: int8 timings per layer shape, pricing "this layer int8", its own
calibration, and the errors when a table cannot price bits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from netdiet.cost import cost, price
from netdiet.cost.latency import (
    LatencyModel,
    LatencyTable,
    LayerSignature,
    TimingProtocol,
    make_backend,
    profile_space,
)
from netdiet.cost.latency.backends import synthetic_ms
from netdiet.cost.latency.model import int8_share
from netdiet.errors import ConfigError, LatencyTableError
from netdiet.export import export_model
from netdiet.report import calibrate_latency, measure_model_ms, validate_latency
from netdiet.report.latency_fit import random_variants
from netdiet.space import Assignment, Space, analyze
from small_models import conv_stack

BATCH = 2


def small_cnn() -> nn.Module:
    return conv_stack((32, 64, 64)).eval()


@pytest.fixture(scope="module")
def space() -> Space:
    return analyze(small_cnn(), (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)),))


@pytest.fixture(scope="module")
def table(space: Space) -> LatencyTable:
    return profile_space(space, make_backend("synthetic"), BATCH, progress=False, precisions=("fp32", "int8"))


def test_int8_timings_sit_on_the_fp32_grid_and_are_the_int8_formula(
    space: Space, table: LatencyTable
) -> None:
    assert table.precisions == ("fp32", "int8")
    for entry in table.entries.values():
        assert entry.int8 is not None
        assert entry.int8.grid.in_points == entry.grid.in_points
        assert entry.int8.grid.out_points == entry.grid.out_points
        sig = entry.signature
        for i, c_in in enumerate(entry.grid.in_points):
            for j, c_out in enumerate(entry.grid.out_points or [c_in]):
                value = entry.int8.grid.ms[i][j] if entry.grid.out_points else entry.int8.grid.ms[i]
                assert value == synthetic_ms(sig, BATCH, c_in, c_out, "int8")
                fp32 = entry.grid.ms[i][j] if entry.grid.out_points else entry.grid.ms[i]
                assert value < fp32
        assert entry.int8.multiple == entry.multiple > 1  # its own probe ran (same formula: same result)


def test_int8_axis_round_trips_through_json(table: LatencyTable, tmp_path: Path) -> None:
    path = table.save(tmp_path / "t.json")
    back = LatencyTable.load(path)
    assert back.precisions == ("fp32", "int8")
    for key, entry in table.entries.items():
        assert back.entries[key].int8 == entry.int8


def test_fp32_tables_from_before_the_axis_still_load(space: Space, tmp_path: Path) -> None:
    plain = profile_space(space, make_backend("synthetic"), BATCH, progress=False)
    back = LatencyTable.load(plain.save(tmp_path / "t.json"))
    assert back.precisions == ("fp32",) and all(e.int8 is None for e in back.entries.values())


def test_int8_layers_are_priced_from_the_int8_timings(space: Space, table: LatencyTable) -> None:
    latency = LatencyModel(space, table)
    counts = space.counts(None)
    fp32 = latency.tabled_ms(counts)
    int8 = latency.tabled_ms(counts, latency.uniform_bits(8))
    expected_fp32 = sum(
        synthetic_ms(n.signature, BATCH, n.shape.in_channels, n.shape.out_channels) for n in latency.needs
    )
    expected_int8 = sum(
        synthetic_ms(n.signature, BATCH, n.shape.in_channels, n.shape.out_channels, "int8")
        for n in latency.needs
    )
    assert fp32 == pytest.approx(expected_fp32) and int8 == pytest.approx(expected_int8)
    assert int8 < fp32
    # 16 bits runs no faster kernel on a CPU runtime: priced as fp32; 4 bits runs the int8 kernel
    assert latency.tabled_ms(counts, latency.uniform_bits(16)) == pytest.approx(fp32)
    assert latency.tabled_ms(counts, latency.uniform_bits(4)) == pytest.approx(int8)
    # one layer int8, the rest fp32
    first = latency.needs[0]
    one = latency.tabled_ms(counts, {first.shape.layer: 8})
    c_in, c_out = first.shape.in_channels, first.shape.out_channels
    delta = synthetic_ms(first.signature, BATCH, c_in, c_out) - synthetic_ms(
        first.signature, BATCH, c_in, c_out, "int8"
    )
    assert one == pytest.approx(fp32 - delta, rel=1e-6)


def test_a_layer_is_int8_only_when_weight_and_input_are_both_8_bits(
    space: Space, table: LatencyTable
) -> None:
    latency = LatencyModel(space, table)
    knobs = space.knobs
    dense = float(price(space, None, latency=latency).latency_ms)
    all8 = float(price(space, Assignment.uniform_bits(knobs, 8), latency=latency).latency_ms)
    weights_only = Assignment(
        {k: v for k, v in Assignment.uniform_bits(knobs, 8).items() if k.startswith("weight")}
    )
    w_only = float(price(space, weights_only, latency=latency).latency_ms)
    assert all8 < dense
    assert w_only == pytest.approx(dense)  # 8-bit weights with float inputs run the float kernel


def test_relaxed_bits_give_a_latency_gradient_between_8_and_16(space: Space, table: LatencyTable) -> None:
    latency = LatencyModel(space, table)
    assert int8_share(8) == 1.0 and int8_share(16) == 0.0 and int8_share(12) == 0.0  # whole bits: a step
    assert int8_share(12.5) == pytest.approx(3.5 / 8)
    layer = latency.needs[1].shape.layer
    bits = torch.tensor(12.0, requires_grad=True)
    value = latency.predict(space.counts(None), {layer: bits})
    value.backward()
    assert bits.grad is not None and torch.isfinite(bits.grad) and float(bits.grad) > 0  # more bits, slower
    low = torch.tensor(6.0, requires_grad=True)  # below 8 bits nothing gets faster on int8 kernels
    latency.predict(space.counts(None), {layer: low}).backward()
    assert low.grad is not None and float(low.grad) == 0.0


def test_pricing_bits_on_a_table_without_int8_names_the_fix(space: Space) -> None:
    plain = profile_space(space, make_backend("synthetic"), BATCH, progress=False)
    latency = LatencyModel(space, plain)
    with pytest.raises(LatencyTableError, match="--int8"):
        latency.predict(space.counts(None), latency.uniform_bits(8))
    assert latency.predict(space.counts(None), latency.uniform_bits(32)) > 0  # fp32 needs no int8 timings


def test_int8_calibration_is_its_own_fit_and_predicts_int8_exports(space: Space, tmp_path: Path) -> None:
    table = profile_space(
        space, make_backend("synthetic"), BATCH, progress=False, precisions=("fp32", "int8")
    )
    calibrate_latency(space, table, n_fit=4)
    model = calibrate_latency(space, table, n_fit=4, precision="int8", path=tmp_path / "t.json")
    assert model.is_calibrated("fp32") and model.is_calibrated("int8")
    key = model.calibration_key("int8")
    assert key != model.fingerprint and table.calibration[key]["precision"] == "int8"
    bits = model.uniform_bits(8)
    args = space.example_inputs.args
    dense_int8 = measure_model_ms(space.model, args, "synthetic", batch=BATCH, precision="int8")
    dense_fp32 = measure_model_ms(space.model, args, "synthetic", batch=BATCH)
    assert dense_int8 < dense_fp32
    assert model.predict_keep(None, bits) == pytest.approx(dense_int8, rel=1e-3)
    assert model.predict_keep(None) == pytest.approx(dense_fp32, rel=1e-3)
    for keep in random_variants(space, 4, seed=3, multiples=model.group_multiples("int8"))[1::2]:
        slim = export_model(space, keep, verify=False)
        measured = measure_model_ms(slim, args, "synthetic", batch=BATCH, precision="int8")
        assert model.predict_keep(keep, bits) == pytest.approx(measured, rel=1e-3)
    result = validate_latency(space, table, n=2, precision="int8")
    assert result["precision"] == "int8" and result["max_abs_error"] < 0.05


def test_backends_without_int8_refuse_it() -> None:
    sig = LayerSignature("linear")
    with pytest.raises(ConfigError, match="cannot time int8"):
        make_backend("torch").time_layer(sig, 1, 8, 8, precision="int8")
    with pytest.raises(ConfigError, match="cannot time int8"):
        profile_space(
            analyze(nn.Sequential(nn.Linear(8, 8)), (torch.randn(1, 8),)),
            make_backend("torch"),
            1,
            progress=False,
            precisions=("fp32", "int8"),
        )
    with pytest.raises(ConfigError, match="precisions"):
        profile_space(
            analyze(nn.Sequential(nn.Linear(8, 8)), (torch.randn(1, 8),)),
            make_backend("synthetic"),
            1,
            progress=False,
            precisions=("int4",),
        )


@pytest.mark.parametrize(
    "sig, kernel",
    [
        (LayerSignature("conv", (3, 3), (1, 1), (1, 1), (1, 1), (8, 8)), "QLinearConv"),
        (LayerSignature("dwconv", (3, 3), (1, 1), (1, 1), (1, 1), (8, 8)), "QLinearConv"),
        (LayerSignature("linear"), "QGemm"),
        (LayerSignature("linear", tokens=4), "QLinearMatMul"),
    ],
)
def test_onnxruntime_int8_layers_run_int8_kernels(sig: LayerSignature, kernel: str) -> None:
    pytest.importorskip("onnxruntime")
    backend = make_backend("onnxruntime", protocol=TimingProtocol(warmup=1, repeats=3, min_sample_ms=0.0))
    kernels = backend.layer_kernels(sig, 2, 16, 16, "int8")
    assert kernel in kernels and "Conv" not in kernels and "Gemm" not in kernels and "MatMul" not in kernels
    assert 0 < backend.time_layer(sig, 2, 16, 16, precision="int8") < 1000


def test_cost_report_prices_bits_with_the_latency_model(space: Space, table: LatencyTable) -> None:
    latency = LatencyModel(space, table)
    weights = {n.shape.weight: 8 for n in latency.needs if n.shape.weight}
    acts = {n.shape.layer: 8 for n in latency.needs}
    report = cost(space, weight_bits=weights, act_bits=acts, latency=latency, per_layer=False)
    assert report.latency_ms == pytest.approx(latency.predict(space.counts(None), latency.uniform_bits(8)))
