"""Depth knobs: residual blocks found by the graph, priced by the cost model, dropped by the exporter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netdiet
from engine_checks import n_params, outputs
from netdiet import zoo
from netdiet.export import export_assignment
from netdiet.export.blocks import DroppedBlock
from small_models import tiny_t5


class PreNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x)))) * mask


class PostNormTuple(nn.Module):
    """Returns (stream, None) like HF layers without attention weights."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.norm = nn.Linear(d, d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.norm(x + self.fc(x)), None


class Widen(nn.Module):
    """Changes the width: not a block."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d + 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class NoSkip(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.layers = nn.ModuleList([PreNorm(8), PostNormTuple(8), NoSkip(8), PreNorm(8), Widen(8)])
        self.out = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x[..., :1] > -5).float()
        h = self.inp(x)
        for layer in self.layers:
            y = layer(h, mask)
            h = y[0] if isinstance(y, tuple) else y
        return self.out(h.mean(1))


X = torch.randn(2, 4, 5)


def test_blocks_are_the_residual_layers_that_keep_the_stream() -> None:
    space = netdiet.analyze(Stack().eval(), X)
    assert [b.module_path for b in space.analysis.blocks] == ["layers.0", "layers.1", "layers.3"]
    knobs = space.knobs_of("block")
    assert [k.id for k in knobs] == ["block:layers.0", "block:layers.1", "block:layers.3"]
    assert all(k.dense == 1 and k.minimum == 0 for k in knobs)


def test_a_dropped_block_costs_nothing_and_exports_as_the_identity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Stack().eval()
    space = netdiet.analyze(model, X)
    choice = netdiet.Assignment.of(blocks={"layers.0": 0, "layers.1": 0}, keep=space.sample(0.6, seed=0))
    dense = netdiet.price(space)
    priced = netdiet.price(space, choice)
    slim, applied = export_assignment(space, choice)  # verified against the masked model, blocks dropped
    assert applied["dropped_blocks"] == {"layers.0": 0, "layers.1": [None]}
    assert isinstance(slim.layers[0], DroppedBlock) and isinstance(slim.layers[1], DroppedBlock)
    assert priced.flops == pytest.approx(netdiet.measured_flops(slim, X), rel=1e-9)
    assert int(priced.params) == n_params(slim)
    assert priced.flops < netdiet.price(space, netdiet.Assignment.of(keep=choice.keep)).flops < dense.flops
    # The dropped blocks computed nothing: the model equals the one where those layers are identities.
    ref = space.mask(choice.keep)
    ref.layers[0], ref.layers[1] = DroppedBlock(), DroppedBlock(2)
    for a, b in zip(outputs(ref, X), outputs(slim, X), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    netdiet.save(slim, tmp_path)
    again = netdiet.load(tmp_path, Stack())
    assert isinstance(again.layers[1], DroppedBlock)
    for a, b in zip(outputs(slim, X), outputs(again, X), strict=True):
        assert torch.equal(a, b)


def test_a_relaxed_block_value_scales_its_cost() -> None:
    space = netdiet.analyze(Stack().eval(), X)
    full = netdiet.price(space).flops
    gone = netdiet.price(space, {"block:layers.3": 0}).flops
    half = netdiet.price(space, {"block:layers.3": torch.tensor(0.5, requires_grad=True)}).flops
    assert float(half.detach()) == pytest.approx((full + gone) / 2)
    half.backward()


def test_resnet_blocks_without_downsampling_drop_and_prune_together() -> None:
    torch.manual_seed(0)
    model = zoo.build("resnet20").eval()
    x = zoo.example_inputs("resnet20", batch_size=2)
    space = netdiet.analyze(model, x)
    assert [b.module_path for b in space.analysis.blocks] == [
        "layer1.0",
        "layer1.1",
        "layer1.2",
        "layer2.1",
        "layer2.2",
        "layer3.1",
        "layer3.2",
    ]
    choice = netdiet.Assignment.of(blocks={"layer2.1": 0, "layer3.2": 0}, keep=space.sample(0.5, seed=3))
    slim, _ = export_assignment(space, choice)
    assert netdiet.price(space, choice).flops == pytest.approx(netdiet.measured_flops(slim, x), rel=1e-9)


def test_a_block_knob_refuses_values_other_than_zero_and_one() -> None:
    space = netdiet.analyze(Stack().eval(), X)
    with pytest.raises(netdiet.InvalidKeepError, match="outside"):
        netdiet.Assignment({"block:layers.0": 2}).validate(space)
    with pytest.raises(netdiet.InvalidKeepError, match="not a knob"):
        netdiet.Assignment({"block:layers.2": 0}).validate(space)


def test_a_latency_budget_prices_dropped_blocks_by_their_layers_timings() -> None:
    from netdiet.cost.latency import LatencyModel, make_backend, profile_space
    from netdiet.cost.latency.backends import synthetic_ms

    torch.manual_seed(0)
    model = zoo.build("resnet20", widths=[8, 16, 32]).eval()
    x = zoo.example_inputs("resnet20", batch_size=1)
    space = netdiet.analyze(model, x)
    latency = LatencyModel(space, profile_space(space, make_backend("synthetic"), 2, progress=False))
    counts = space.counts(None)
    full = latency.predict(counts)
    dropped = latency.predict(counts, blocks={"layer2.1": 0})
    inside = [n for n in latency.needs if n.shape.layer.startswith("layer2.1.")]
    assert len(inside) == 2  # its two convs
    removed = sum(synthetic_ms(n.signature, 2, n.shape.in_channels, n.shape.out_channels) for n in inside)
    assert full - dropped == pytest.approx(latency.terms["fp32"].scale * removed, rel=1e-6)
    priced = netdiet.price(space, {"block:layer2.1": 0}, latency=latency)
    assert priced.latency_ms == pytest.approx(dropped)


def test_a_layer_that_passes_on_an_input_drops_and_nested_blocks_drop_with_it() -> None:
    """T5 layers return (stream, position bias they were given): dropped, they pass the bias on."""
    model, x = tiny_t5(layers=3)
    space = netdiet.analyze(model, x)
    sites = {k.site for k in space.knobs_of("block")}
    assert {"encoder.block.1", "encoder.block.2", "decoder.block.1"} <= sites
    assert "encoder.block.0" not in sites  # it computes the position bias the others are given
    choice = netdiet.Assignment(
        {"block:encoder.block.1": 0, "block:encoder.block.1.layer.0": 0, "block:decoder.block.1": 0}
    )
    slim, applied = export_assignment(space, choice)  # checked against the masked model
    assert applied["dropped_blocks"]["encoder.block.1"][0] == ["arg", 2]
    assert isinstance(slim.encoder.block[1], DroppedBlock) and isinstance(slim.decoder.block[1], DroppedBlock)
    assert netdiet.price(space, choice).flops == pytest.approx(netdiet.measured_flops(slim, x), rel=0.01)


def test_bits_and_ranks_inside_a_dropped_block_are_ignored() -> None:
    torch.manual_seed(0)
    model = zoo.build("resnet20", widths=[8, 16, 32]).eval()
    x = zoo.example_inputs("resnet20", batch_size=2)
    space = netdiet.analyze(model, x)
    bits = netdiet.Assignment.uniform_bits(space.knobs, 8)
    choice = bits.with_values({"block:layer2.1": 0})
    calibration = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    slim, applied = export_assignment(space, choice, calibration=calibration)
    assert isinstance(slim.layer2[1], DroppedBlock)
    plan = applied["quant"]
    quantized = set(plan["bits"])
    assert "layer2.0.conv1" in quantized and "layer2.2.conv1" in quantized
    assert not any(layer.startswith("layer2.1.") for layer in quantized | set(plan["outputs"]))
    assert netdiet.price(space, choice).bops < netdiet.price(space, bits).bops


def _resnet_latency() -> tuple[netdiet.Space, object]:
    from netdiet.cost.latency import make_backend, profile_space

    torch.manual_seed(0)
    model = zoo.build("resnet20", widths=[8, 16, 32]).eval()
    space = netdiet.analyze(model, zoo.example_inputs("resnet20", batch_size=1))
    return space, profile_space(space, make_backend("synthetic"), 2, progress=False)


def test_every_fitted_latency_term_drops_with_a_block_as_in_the_exported_model() -> None:
    """Pricing a dropped block = pricing the exported model with the same fitted terms: the activation
    and unaligned terms leave with the block's layers, not only the table term."""
    from netdiet.cost.latency import LatencyModel

    space, table = _resnet_latency()
    terms = {
        "scale": 1.2,
        "overhead_ms": 3.0,
        "unaligned_ms": 0.1,
        "activation_ms": -0.5,
        "depth_variants": 1,
    }
    full = LatencyModel(space, table)
    table.calibration[full.calibration_key("fp32")] = dict(terms)
    choice = netdiet.Assignment.of(blocks={"layer2.1": 0, "layer1.0": 0}, keep=space.sample(0.7, seed=3))
    slim, _ = export_assignment(space, choice)
    slim_space = netdiet.analyze(slim, space.example_inputs.args)
    slim_model = LatencyModel(slim_space, table)
    table.calibration[slim_model.calibration_key("fp32")] = dict(terms)
    priced = LatencyModel(space, table).predict(space.counts(choice.keep), blocks=choice.blocks)
    assert LatencyModel(slim_space, table).is_calibrated()
    assert float(priced) == pytest.approx(
        float(LatencyModel(slim_space, table).predict(slim_space.counts(None)))
    )
    # relaxed block values scale every term linearly between kept and dropped
    half = LatencyModel(space, table).predict(
        space.counts(choice.keep), blocks={"layer2.1": 0.5, "layer1.0": 0}
    )
    kept = LatencyModel(space, table).predict(space.counts(choice.keep), blocks={"layer1.0": 0})
    assert float(half) == pytest.approx((float(priced) + float(kept)) / 2)


def test_a_fit_on_widths_alone_is_refitted_with_depth_variants_for_a_model_with_blocks() -> None:
    from netdiet.cost.latency import LatencyModel
    from netdiet.report import calibrate_latency, validate_latency

    space, table = _resnet_latency()
    key = LatencyModel(space, table).calibration_key("fp32")
    table.calibration[key] = {"scale": 1.1, "overhead_ms": 1.0}  # as fitted before depth variants
    assert not LatencyModel(space, table).is_calibrated()
    model = calibrate_latency(space, table, n_fit=6)
    fit = table.calibration[key]
    assert model.is_calibrated() and fit["depth_variants"] == 2
    assert [bool(row["dropped"]) for row in fit["fit"]] == [False, False, False, True, False, False, True]
    result = validate_latency(space, table, n=3, seed=11)
    assert result["variants"][2]["dropped"] and result["variants"][2]["flops_ratio"] < 1.0
    # the synthetic backend times exactly the layers there are: the table term of a model without two
    # blocks is what it measures (less the backend's fixed overhead), and the fitted model predicts it
    # as well as it predicts the dense model
    from netdiet.report import measure_model_ms
    from netdiet.report.latency_e2e import SYNTHETIC_OVERHEAD_MS

    drop = {"layer1.1": 0, "layer3.2": 0}
    slim, _ = export_assignment(space, netdiet.Assignment.of(blocks=drop))
    measured = measure_model_ms(slim, space.example_inputs.args, "synthetic", batch=2)
    tabled = float(model.tabled_ms(space.counts(None), None, drop))
    assert tabled + SYNTHETIC_OVERHEAD_MS == pytest.approx(measured, rel=1e-6)
    dense_error = abs(float(model.predict(space.counts(None))) / fit["dense_measured_ms"] - 1)
    drop_error = abs(float(model.predict(space.counts(None), blocks=drop)) / measured - 1)
    assert drop_error <= dense_error + 0.01
