"""Layer shapes in the graph, profiling a model on the synthetic backend (and resuming), the LatencyModel
over the table, its calibration, and the multiple probe."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from netdiet import zoo
from netdiet.cost import cost
from netdiet.cost.latency import (
    LatencyModel,
    LatencyTable,
    LayerSignature,
    TimingProtocol,
    interpolate,
    layer_needs,
    make_backend,
    profile_space,
    signature_of,
)
from netdiet.cost.latency.backends import SyntheticBackend, synthetic_ms
from netdiet.cost.latency.model import covers
from netdiet.cost.latency.profiler import probe_multiple
from netdiet.errors import ConfigError, LatencyTableError
from netdiet.export import export_model
from netdiet.report import calibrate_latency, measure_model_ms, validate_latency
from netdiet.report.latency_e2e import SYNTHETIC_OVERHEAD_MS
from netdiet.report.latency_fit import random_variants
from netdiet.space import Space, analyze
from small_models import conv_stack

BATCH = 2


@dataclass
class Mobile:
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    space: Space
    table: LatencyTable


@pytest.fixture(scope="module")
def mobile() -> Mobile:
    torch.manual_seed(0)
    model = zoo.build("mobilenetv2", width_mult=0.5).eval()
    inputs = tuple(zoo.example_inputs("mobilenetv2", batch_size=1))
    space = analyze(model, inputs)
    table = profile_space(space, make_backend("synthetic"), BATCH, progress=False)
    return Mobile(model, inputs, space, table)


def small_cnn() -> nn.Module:
    """Every group is 32 or 64 wide, so on the synthetic backend every group has a paying multiple and
    aligned counts sit on the table's lines: the table is exact there."""
    return conv_stack((32, 64, 64)).eval()


@pytest.fixture(scope="module")
def cnn_space() -> Space:
    return analyze(small_cnn(), (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)),))


def as_json(data: object) -> object:
    """What the file holds (tuples become lists)."""
    return json.loads(json.dumps(data))


class CountingBackend(SyntheticBackend):
    """The synthetic backend (same environment) that records which signatures it timed."""

    def __init__(self) -> None:
        super().__init__()
        self.timed: list[str] = []

    def time_layer(self, sig: LayerSignature, batch: int, c_in: int, c_out: int) -> float:
        self.timed.append(sig.key())
        return super().time_layer(sig, batch, c_in, c_out)


# ----- layer shapes in the graph ----------------------------------------------------------------------


def test_mobilenet_layer_shapes_match_the_modules_and_their_inputs(mobile: Mobile) -> None:
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: seen.__setitem__(name, tuple(args[0].shape)))
        for name, m in mobile.model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            mobile.model(*mobile.inputs)
    finally:
        for h in hooks:
            h.remove()
    shapes = {s.layer: s for s in mobile.space.analysis.layer_shapes}
    assert len(shapes) == len(mobile.space.analysis.layer_shapes) == len(seen)
    assert set(shapes) == set(seen)
    for name, s in shapes.items():
        module = mobile.model.get_submodule(name)
        assert s.in_channels == seen[name][1 if s.op == "conv" else -1]
        if isinstance(module, nn.Linear):
            assert (s.op, s.tokens, s.in_channels, s.out_channels) == ("linear", 1, 1280, 10)
            continue
        assert s.op == "conv" and not s.transposed
        assert s.kernel == module.kernel_size
        assert s.stride == module.stride
        assert s.padding == module.padding
        assert s.dilation == module.dilation
        assert s.groups == module.groups
        assert s.out_channels == module.out_channels
        assert s.in_spatial == seen[name][2:]
        assert s.depthwise == (module.groups > 1 and module.groups == module.in_channels)
        assert signature_of(s).op == ("dwconv" if s.depthwise else "conv")
    depthwise = [n for n, s in shapes.items() if s.depthwise]
    strided = [n for n, s in shapes.items() if s.stride == (2, 2)]
    assert len(depthwise) == 17  # one per inverted residual block
    # the CIFAR table has three stride-2 stages, each strided in its first block's depthwise conv
    assert len(strided) == 3 and set(strided) <= set(depthwise)
    assert {shapes[n].in_spatial for n in strided} == {(32, 32), (16, 16), (8, 8)}
    assert {shapes[n].kernel for n in depthwise} == {(3, 3)}
    stem = shapes["features.0.0"]
    assert (stem.kernel, stem.in_channels, stem.depthwise, stem.padding) == ((3, 3), 3, False, (1, 1))
    expand = shapes["features.2.conv.0.0"]  # 1x1 expansion conv
    assert (expand.kernel, expand.padding, expand.depthwise) == ((1, 1), (0, 0), False)


class Odd(nn.Module):
    """Non-square input, dilation, padding="same", a grouped conv and a linear over 100 positions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, (3, 1), stride=(2, 1), padding=(1, 0), dilation=(2, 1))
        self.same = nn.Conv2d(16, 16, (3, 5), padding="same", groups=4)
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.same(torch.relu(self.conv(x)))
        return self.fc(h.flatten(2).transpose(1, 2))


def test_layer_shapes_of_non_square_dilated_grouped_convs_and_token_linears() -> None:
    space = analyze(Odd(), (torch.randn(1, 3, 12, 20),))
    shapes = {s.layer: s for s in space.analysis.layer_shapes}
    conv, same, fc = shapes["conv"], shapes["same"], shapes["fc"]
    assert (conv.kernel, conv.stride, conv.padding, conv.dilation) == ((3, 1), (2, 1), (1, 0), (2, 1))
    assert conv.in_spatial == (12, 20) and (conv.in_channels, conv.out_channels) == (3, 16)
    # (12 + 2 - 2 * 2 - 1) // 2 + 1 = 5 rows reach the next conv; "same" padding is read as numbers
    assert same.in_spatial == (5, 20) and same.padding == (1, 2)
    assert (same.groups, same.depthwise) == (4, False)
    assert (fc.op, fc.tokens, fc.in_channels, fc.out_channels) == ("linear", 100, 16, 8)
    assert signature_of(conv).key() == "conv k3x1 s2x1 p1x0 d2x1 in12x20"
    assert signature_of(same).key() == "conv k3x5 s1x1 p1x2 in5x20 g4"
    assert signature_of(fc).key() == "linear t100"
    # a grouped conv is measured at multiples of its group count only
    table = profile_space(space, make_backend("synthetic"), 1, progress=False)
    entry = table.entries[signature_of(same).key()]
    assert all(p % 4 == 0 for p in entry.in_points + (entry.out_points or []))
    assert signature_of(fc).macs(2, 16, 8) == 2 * 100 * 16 * 8


def test_signature_keys_tell_depthwise_and_stride_apart(mobile: Mobile) -> None:
    keys = {n.key for n in layer_needs(mobile.space)}
    assert "dwconv k3x3 s2x2 p1x1 in32x32" in keys and "dwconv k3x3 s1x1 p1x1 in32x32" in keys
    assert "conv k1x1 s1x1 p0x0 in4x4" in keys and "linear t1" in keys
    # signatures round-trip through their dict form (the table file)
    for need in layer_needs(mobile.space):
        assert LayerSignature.from_dict(json.loads(json.dumps(need.signature.to_dict()))) == need.signature


# ----- profiling --------------------------------------------------------------------------------------


def test_profile_covers_every_layer_shape_and_measures_the_right_counts(mobile: Mobile) -> None:
    table = mobile.table
    needs = layer_needs(mobile.space)
    assert set(table.entries) == {n.key for n in needs}
    assert len(table.entries) < len(needs)  # shared signatures are measured once
    assert table.env == make_backend("synthetic").env(BATCH)
    for need in needs:
        entry = table.entries[need.key]
        assert covers(entry, need)
        assert need.shape.in_channels in entry.in_points
        if not need.signature.one_axis:
            assert entry.out_points is not None and need.shape.out_channels in entry.out_points
        else:
            assert entry.out_points is None
        if not need.free_in:  # the model input: measured at its size only
            assert entry.in_points == [need.shape.in_channels]
    assert table.entries["linear t1"].out_points == [10]  # classifier outputs never shrink
    for entry in table.entries.values():
        sig = entry.signature
        for grid in [entry.grid] + ([entry.unaligned] if entry.unaligned is not None else []):
            for i, c_in in enumerate(grid.in_points):
                if grid.out_points is None:
                    assert grid.ms[i] == synthetic_ms(sig, BATCH, c_in, c_in)
                else:
                    for j, c_out in enumerate(grid.out_points):
                        assert grid.ms[i][j] == synthetic_ms(sig, BATCH, c_in, c_out)
        if entry.multiple > 1:  # measured again one channel below every multiple, on free axes
            assert entry.unaligned is not None
            axes = [(entry.in_points, entry.unaligned.in_points)]
            if entry.out_points is not None and entry.unaligned.out_points is not None:
                axes.append((entry.out_points, entry.unaligned.out_points))
            for aligned, unaligned in axes:
                if len(aligned) > 1:
                    assert not any(p % entry.multiple == 0 for p in unaligned)
                else:
                    assert unaligned == aligned
        else:
            assert entry.unaligned is None


class Asymmetric(SyntheticBackend):
    """Input and output counts cost differently, so a transposed grid shows."""

    def time_layer(self, sig: LayerSignature, batch: int, c_in: int, c_out: int) -> float:
        return 0.001 * c_in + 1.0 * c_out + (0.5 if sig.one_axis else 0.0)


def test_grid_rows_are_input_counts_and_columns_output_counts(cnn_space: Space) -> None:
    table = profile_space(cnn_space, Asymmetric(), BATCH, probe=False, progress=False)
    for entry in table.entries.values():
        assert entry.multiple == 1 and entry.probe == {}  # probe=False
        # the unaligned grid is measured whatever the probe says, one below each multiple of 8
        assert entry.unaligned is not None and entry.align == 8
        for i, c_in in enumerate(entry.unaligned.in_points):
            for j, c_out in enumerate(entry.unaligned.out_points or []):
                assert c_out % 8 != 0 or c_out == 1 or c_out == entry.out_points[-1]
                assert entry.unaligned.ms[i][j] == pytest.approx(0.001 * c_in + c_out)
        for i, c_in in enumerate(entry.in_points):
            for j, c_out in enumerate(entry.out_points or []):
                assert entry.grid.ms[i][j] == pytest.approx(0.001 * c_in + c_out)
    latency = LatencyModel(cnn_space, table)
    expected = sum(0.001 * s.in_channels + s.out_channels for s in cnn_space.analysis.layer_shapes)
    assert latency.predict_keep(None) == pytest.approx(expected)


def test_dense_prediction_is_the_sum_of_the_layer_formulas(mobile: Mobile) -> None:
    latency = LatencyModel(mobile.space, mobile.table)
    assert not latency.calibrated and latency.batch == BATCH
    expected = sum(
        synthetic_ms(signature_of(s), BATCH, s.in_channels, s.out_channels)
        for s in mobile.space.analysis.layer_shapes
    )
    assert latency.predict_keep(None) == pytest.approx(expected, rel=1e-12)
    assert latency.predict(mobile.space.counts(mobile.space.full_keep())) == pytest.approx(
        expected, rel=1e-12
    )
    assert latency.unaligned_layers({}) == 0
    measured = measure_model_ms(mobile.model, mobile.inputs, "synthetic", batch=BATCH)
    assert measured == pytest.approx(expected + SYNTHETIC_OVERHEAD_MS, rel=1e-12)


def test_cost_report_carries_the_models_prediction(mobile: Mobile) -> None:
    latency = LatencyModel(mobile.space, mobile.table)
    keep = mobile.space.sample(seed=3)
    report = cost(mobile.space, keep, latency=latency)
    assert report.latency_ms == pytest.approx(latency.predict_keep(keep), rel=1e-12)
    assert report.latency_ms < latency.predict_keep(None)
    plain = cost(mobile.space, keep)
    assert plain.latency_ms is None and plain.flops == report.flops
    assert report.to_dict()["latency_ms"] == pytest.approx(report.latency_ms)
    ratio = report.ratio_to(cost(mobile.space, latency=latency))
    assert ratio["latency_ms"] == pytest.approx(report.latency_ms / latency.predict_keep(None))
    # relaxed counts: the same model, differentiable
    counts = {
        g.name: torch.tensor(g.size * 0.55, dtype=torch.float64, requires_grad=True)
        for g in mobile.space.groups
    }
    relaxed = cost(mobile.space, counts, per_layer=False, latency=latency).latency_ms
    assert isinstance(relaxed, torch.Tensor) and relaxed.requires_grad
    relaxed.backward()
    grads = [counts[g.name].grad for g in mobile.space.groups]
    assert all(g is not None and torch.isfinite(g) and float(g) > 0 for g in grads)


def test_profile_resumes_after_a_kill_measuring_only_what_is_missing(mobile: Mobile, tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    finished: list[str] = []

    def killed_after_two(key: str, entry: object) -> None:
        finished.append(key)
        if len(finished) == 2:
            raise KeyboardInterrupt  # what a Ctrl-C between two layer shapes looks like

    with pytest.raises(KeyboardInterrupt):
        profile_space(
            mobile.space,
            make_backend("synthetic"),
            BATCH,
            path=path,
            on_entry=killed_after_two,
            progress=False,
        )
    on_disk = LatencyTable.load(path)
    assert sorted(on_disk.entries) == sorted(finished) and len(finished) == 2

    backend = CountingBackend()
    resumed = profile_space(mobile.space, backend, BATCH, path=path, progress=False)
    remaining = set(mobile.table.entries) - set(finished)
    assert set(backend.timed) == remaining
    assert set(LatencyTable.load(path).entries) == set(mobile.table.entries)
    assert as_json(resumed.to_dict()["layers"]) == as_json(mobile.table.to_dict()["layers"])

    again = CountingBackend()
    profile_space(mobile.space, again, BATCH, path=path, progress=False)
    assert again.timed == []  # a finished table is a no-op

    # resume=False measures everything again
    fresh = CountingBackend()
    profile_space(mobile.space, fresh, BATCH, path=path, resume=False, progress=False)
    assert set(fresh.timed) == set(mobile.table.entries)


def test_resuming_a_table_from_another_batch_is_refused(mobile: Mobile, tmp_path: Path) -> None:
    path = mobile.table.save(tmp_path / "b2.json")
    with pytest.raises(LatencyTableError, match="batch: table 2, here 4"):
        profile_space(mobile.space, make_backend("synthetic"), 4, path=path, progress=False)
    with pytest.raises(ConfigError, match="batch must be >= 1"):
        profile_space(mobile.space, make_backend("synthetic"), 0, progress=False)


def test_a_table_missing_a_shape_names_netdiet_profile(mobile: Mobile) -> None:
    table = LatencyTable.from_dict(mobile.table.to_dict())
    dropped = "dwconv k3x3 s2x2 p1x1 in16x16"
    del table.entries[dropped]
    with pytest.raises(
        LatencyTableError, match=f"no measurements for 1 layer shape.*{dropped}.*netdiet profile"
    ):
        LatencyModel(mobile.space, table)
    # an entry measured for a narrower model does not cover this one's dense counts
    table = LatencyTable.from_dict(mobile.table.to_dict())
    entry = table.entries["linear t1"]
    entry.grid.in_points, entry.grid.ms = entry.grid.in_points[:2], entry.grid.ms[:2]
    with pytest.raises(LatencyTableError, match="covers 'linear t1' only up to .*netdiet profile"):
        LatencyModel(mobile.space, table)
    # profiling completes the narrow entry
    backend = CountingBackend()
    profile_space(mobile.space, backend, BATCH, table=table, progress=False)
    assert set(backend.timed) == {"linear t1"}
    LatencyModel(mobile.space, table)


# ----- calibration ------------------------------------------------------------------------------------


def test_calibration_on_synthetic_recovers_the_overhead_and_predicts_aligned_variants(
    cnn_space: Space, tmp_path: Path
) -> None:
    table = profile_space(cnn_space, make_backend("synthetic"), BATCH, progress=False)
    plain = LatencyModel(cnn_space, table)
    multiples = plain.group_multiples()
    assert set(multiples) == {g.name for g in cnn_space.groups}  # every group has a paying multiple here
    path = tmp_path / "cal.json"
    model = calibrate_latency(cnn_space, table, n_fit=4, path=path)
    assert model.calibrated and model.fingerprint == plain.fingerprint
    fit = table.calibration[model.fingerprint]
    # synthetic end to end = the layer formulas + a fixed overhead: the tables are right up to that
    assert fit["scale"] == pytest.approx(1.0, abs=1e-2)
    assert len(fit["fit"]) == 5 and fit["fit_median_abs_error"] < 1e-3
    dense_ms = measure_model_ms(cnn_space.model, cnn_space.example_inputs.args, "synthetic", batch=BATCH)
    assert fit["dense_measured_ms"] == pytest.approx(dense_ms, rel=1e-12)
    assert model.predict_keep(None) == pytest.approx(dense_ms, rel=1e-3)
    assert plain.predict_keep(None) == pytest.approx(dense_ms - SYNTHETIC_OVERHEAD_MS, rel=1e-12)
    reloaded = LatencyModel(cnn_space, LatencyTable.load(path))  # written back to the file
    assert reloaded.calibrated and reloaded.predict_keep(None) == pytest.approx(model.predict_keep(None))
    variants = random_variants(cnn_space, 6, seed=77, multiples=multiples)
    aligned = variants[1::2]
    for keep in aligned:
        counts = {name: len(idx) for name, idx in keep.items()}
        assert all(counts[name] % m == 0 for name, m in multiples.items())
        slim = export_model(cnn_space, keep, verify=False)
        measured = measure_model_ms(slim, cnn_space.example_inputs.args, "synthetic", batch=BATCH)
        assert model.predict_keep(keep) == pytest.approx(measured, rel=1e-3)
    assert len({model.predict_keep(k) for k in aligned}) == len(aligned)  # the variants differ

    result = validate_latency(cnn_space, table, n=2, seed=5)
    assert [r["variant"] for r in result["variants"]] == [0, 1]
    for row in result["variants"]:
        assert row["error"] == pytest.approx((row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"])
    assert result["max_abs_error"] >= result["median_abs_error"] >= 0
    # the ratio error compares latency relative to the dense model measured in the same pass
    assert result["dense_measured_ms"] == pytest.approx(dense_ms, rel=1e-12)
    for row in result["variants"]:
        assert row["measured_ratio"] == pytest.approx(row["measured_ms"] / dense_ms)
        assert row["predicted_ratio"] == pytest.approx(row["predicted_ms"] / model.predict_keep(None))
        assert row["ratio_error"] == pytest.approx(row["predicted_ratio"] / row["measured_ratio"] - 1)
    assert result["max_abs_ratio_error"] >= result["median_abs_ratio_error"] >= 0


def test_unaligned_counts_price_the_unaligned_grid_and_the_calibrated_terms(cnn_space: Space) -> None:
    table = profile_space(cnn_space, make_backend("synthetic"), BATCH, progress=False)
    latency = LatencyModel(cnn_space, table)
    assert all(e.multiple > 1 for e in table.entries.values())

    def exact(keep: dict[str, int]) -> float:
        counts = cnn_space.counts(keep)
        return sum(
            synthetic_ms(
                signature_of(s),
                BATCH,
                cnn_space.dim_size(s.in_layout, counts),
                cnn_space.dim_size(s.out_layout, counts),
            )
            for s in cnn_space.analysis.layer_shapes
        )

    off = {g.name: 31 for g in cnn_space.groups}  # one below a multiple: a point of every unaligned grid
    on = {g.name: 32 for g in cnn_space.groups}
    assert latency.unaligned_layers(cnn_space.counts(off)) == len(cnn_space.analysis.layer_shapes)
    assert latency.unaligned_layers(cnn_space.counts(on)) == 0
    assert latency.predict_keep(off) == pytest.approx(exact(off), rel=1e-12)
    assert latency.predict_keep(on) == pytest.approx(exact(on), rel=1e-12)
    assert latency.predict_keep(off) > latency.predict_keep(on)  # one channel fewer, but slower

    # a fitted model: scale * tabled + unaligned_ms * unaligned layers + overhead
    table.calibration[latency.fingerprint] = {"scale": 2.0, "unaligned_ms": 0.25, "overhead_ms": -0.5}
    fitted = LatencyModel(cnn_space, table)
    assert fitted.calibrated
    n = len(cnn_space.analysis.layer_shapes)
    assert fitted.predict_keep(off) == pytest.approx(2.0 * exact(off) + 0.25 * n - 0.5, rel=1e-12)
    assert fitted.predict_keep(on) == pytest.approx(2.0 * exact(on) - 0.5, rel=1e-12)
    # relaxed (fractional) counts price the aligned grid, since read-off rounds to the multiple, and no
    # unaligned term
    relaxed = {g.name: torch.tensor(30.5, dtype=torch.float64, requires_grad=True) for g in cnn_space.groups}
    value = cost(cnn_space, relaxed, per_layer=False, latency=fitted).latency_ms
    counts = cnn_space.counts({k: 30.5 for k in relaxed})
    aligned = sum(
        interpolate(
            table.entries[n.key].grid,
            float(cnn_space.dim_size(n.shape.in_layout, counts)),
            float(cnn_space.dim_size(n.shape.out_layout, counts)),
        )
        for n in layer_needs(cnn_space)
    )
    assert float(value.detach()) == pytest.approx(2.0 * aligned - 0.5, rel=1e-9)
    value.backward()
    assert all(float(t.grad) > 0 for t in relaxed.values())


def test_validation_needs_a_calibrated_model(cnn_space: Space) -> None:
    table = profile_space(cnn_space, make_backend("synthetic"), BATCH, progress=False)
    with pytest.raises(ConfigError, match="calibrate"):
        validate_latency(cnn_space, table, n=1)
    with pytest.raises(ConfigError, match="n_fit must be >= 1"):
        calibrate_latency(cnn_space, table, n_fit=0)


# ----- the multiple probe -----------------------------------------------------------------------------


class PureMacs(SyntheticBackend):
    """No penalty for any channel count: no multiple pays."""

    def time_layer(self, sig: LayerSignature, batch: int, c_in: int, c_out: int) -> float:
        return 1e-6 * sig.macs(batch, c_in, c_out) + 0.01


class Blocked16(SyntheticBackend):
    """A runtime with 16-channel blocks: counts are rounded up to a multiple of 16."""

    def time_layer(self, sig: LayerSignature, batch: int, c_in: int, c_out: int) -> float:
        up = lambda c: -(-c // 16) * 16  # noqa: E731
        return 1e-6 * sig.macs(batch, up(c_in), up(c_out)) + 0.01


def test_probe_finds_the_multiple_of_8_of_the_synthetic_backend(cnn_space: Space) -> None:
    needs = {n.shape.layer: n for n in layer_needs(cnn_space)}
    wide = needs["6"]  # 64 -> 64 channels, both free
    assert (wide.shape.in_channels, wide.shape.out_channels) == (64, 64) and wide.free_in and wide.free_out
    m, record = probe_multiple(make_backend("synthetic"), wide, BATCH)
    assert m == 8
    assert record["16"]["pays"] is False and record["8"]["pays"] is True  # both probed, recorded
    assert probe_multiple(PureMacs(), wide, BATCH)[0] == 1  # measured, never assumed
    assert probe_multiple(Blocked16(), wide, BATCH)[0] == 16


def test_probe_skips_layers_too_narrow_to_tell(cnn_space: Space) -> None:
    narrow = analyze(
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)), (torch.randn(1, 3, 8, 8),)
    )
    for need in layer_needs(narrow):
        m, record = probe_multiple(make_backend("synthetic"), need, BATCH)
        assert (m, record) == (1, {})


def test_onnxruntime_backend_times_one_small_layer() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    backend = make_backend("onnxruntime", protocol=TimingProtocol(warmup=1, repeats=3, min_sample_ms=0.0))
    sig = LayerSignature(
        "conv", kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), in_spatial=(8, 8)
    )
    ms = backend.time_layer(sig, 1, 8, 16)
    assert 0 < ms < 1000
    env = backend.env(1)
    assert env["backend"] == "onnxruntime" and "onnxruntime" in env["runtime"] and env["threads"] == 1
    with pytest.raises(ConfigError, match="float32 layers only"):
        make_backend("onnxruntime", dtype="float16")
    with pytest.raises(ConfigError, match="unknown latency backend"):
        make_backend("tpu")
