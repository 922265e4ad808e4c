"""`netdiet.compress` with bits: post-training int8 in one call, pruning plus int8 to a BOPs budget."""

from __future__ import annotations

import pytest
import torch

import netdiet
from netdiet.data import DataSpec, build_data
from netdiet.errors import ConfigError
from netdiet.quant import quantized_layers
from netdiet.train import TrainConfig

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def digits():
    return build_data(DataSpec("digits", batch_size=64, image_size=16))


def small_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return netdiet.zoo.build("resnet20", widths=[8, 16, 32])


def test_ptq_quantizes_every_layer_without_training_and_reports_the_int8_file(digits) -> None:
    model = small_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = netdiet.compress(model, digits.train, "bops=0.1", method="ptq", eval_data=digits.eval["val"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.history == []  # ptq trains nothing
    layers = quantized_layers(result.model)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len(layers) == convs + 1 and all(q.weight_bits == q.act_bits == 8 for q in layers.values())
    report = result.report
    assert report["bits"] == 8
    assert report["compressed"]["bops"] == pytest.approx(report["dense"]["bops"] * 64 / 1024)
    assert report["compressed"]["flops"] == pytest.approx(report["dense"]["flops"])
    int8 = report["int8_onnx"]
    assert int8["int8_kernels"]["QLinearConv"] == convs and int8["int8_kernels"]["QGemm"] == 1
    assert int8["int8_file_bytes"] < 0.5 * int8["dense_file_bytes"]
    assert int8["int8_ms_b1"] > 0 and int8["dense_ms_b1"] > 0
    assert result.recipe["quant"]["bits"]


def test_a_bops_budget_below_int8_prunes_and_quantizes(digits) -> None:
    result = netdiet.compress(
        small_resnet(),
        digits.train,
        "bops=0.04",
        epochs=0.5,
        finetune_epochs=0.5,
        train_config=TrainConfig(lr=0.02, progress=False),
    )
    report = result.report
    assert report["bits"] == 8  # a BOPs budget quantizes by default
    assert report["compressed"]["bops"] <= 0.04 * report["dense"]["bops"] * (1 + 1e-9)
    assert report["compressed"]["flops"] < 0.7 * report["dense"]["flops"]  # 0.04 / 0.0625: pruned too
    assert quantized_layers(result.model)
    x = next(iter(digits.train)).inputs[0][:4]
    assert torch.isfinite(result.model(x)).all()


def test_ptq_refuses_a_budget_quantization_cannot_meet(digits) -> None:
    with pytest.raises(ConfigError, match="pruning method"):
        netdiet.compress(small_resnet(), digits.train, "flops=0.5", method="ptq")
    with pytest.raises(ConfigError, match="give it bits below 32"):
        netdiet.compress(small_resnet(), digits.train, "bops=0.5", method="ptq", bits=32)


def test_quantization_aware_fine_tuning_runs_at_a_fortieth_of_the_lr_and_stays_finite(digits) -> None:
    result = netdiet.compress(
        small_resnet(),
        digits.train,
        "bops=0.1",
        method="ptq",
        finetune_epochs=1,
        train_config=TrainConfig(lr=0.02, progress=False),
        latency_batches=(),
    )
    assert result.report["finetune_lr"] == pytest.approx(0.02 * 0.025)
    assert len(result.history) == 1 and result.history[0]["train_loss"] < 10
    assert all(q.weight_bits == 8 for q in quantized_layers(result.model).values())


def test_a_quantization_aware_fine_tune_that_makes_things_worse_is_undone(digits) -> None:
    ptq = netdiet.compress(small_resnet(), digits.train, "bops=0.1", method="ptq", latency_batches=())
    with pytest.warns(UserWarning, match="returning the post-training quantized model"):
        bad = netdiet.compress(
            small_resnet(),
            digits.train,
            "bops=0.1",
            method="ptq",
            finetune_epochs=1,
            train_config=TrainConfig(lr=40.0, grad_clip=None, progress=False),  # 1.0 after the QAT scale
            latency_batches=(),
        )
    check = bad.report["qat_check"]
    assert check["kept"] == "ptq" and check["loss_after"] > 1.5 * check["loss_before"]
    x = next(iter(digits.train)).inputs[0][:8]
    with torch.no_grad():
        assert torch.equal(bad.model(x), ptq.model(x))


def test_int8_pruning_keeps_channel_counts_in_multiples_of_8() -> None:
    model = small_resnet()
    comp = netdiet.Compressor(model, (torch.randn(1, 3, 16, 16),), "bops=0.04", method="uniform", bits=8)
    assert comp.method.context.multiples and set(comp.method.context.multiples.values()) == {8}
    kept = {name: int(idx.numel()) for name, idx in comp.method.read_off().keep.items()}
    sizes = {g.name: g.size for g in comp.space.groups}
    assert any(kept[n] < sizes[n] for n in kept)
    assert all(kept[n] % 8 == 0 for n in kept if n in comp.method.context.multiples)


def test_a_latency_budget_with_int8_is_priced_from_int8_timings_and_measured_as_int8(digits) -> None:
    """int8 kernels are faster, so int8 at the same latency budget keeps more channels than fp32."""
    model = small_resnet()
    common = dict(
        epochs=0.3,
        finetune_epochs=0,
        latency_backend="synthetic",
        latency_batches=(),
        train_config=TrainConfig(lr=0.02, progress=False),
        progress=False,
    )
    int8 = netdiet.compress(model, digits.train, "latency=0.35", bits=8, **common)
    fp32 = netdiet.compress(model, digits.train, "latency=0.35", bits=32, **common)
    lat8, lat32 = int8.report["latency"], fp32.report["latency"]
    assert lat8["precision"] == "int8" and lat32["precision"] == "fp32"
    assert lat8["predicted_ratio"] <= 0.35 + 1e-6 and lat32["predicted_ratio"] <= 0.35 + 1e-6
    # the synthetic backend is deterministic: the measured int8 export is what the table predicted
    assert lat8["measured_ratio"] == pytest.approx(lat8["predicted_ratio"], rel=0.05)
    assert int8.report["compressed"]["flops"] > fp32.report["compressed"]["flops"]


def test_l1l2_with_learned_bits_in_one_call_meets_the_bops_budget_with_its_own_bits(digits) -> None:
    result = netdiet.compress(
        small_resnet(),
        digits.train,
        "bops=0.03",
        method="l1l2",
        method_options={"learn_bits": True},
        epochs=0.5,
        finetune_epochs=0.2,
        train_config=TrainConfig(lr=0.02, progress=False),
        latency_batches=(),
        progress=False,
    )
    report = result.report
    assert report["bits"] == 8  # quantized, each layer at the bits l1l2 learned (at most 8 here)
    assert report["compressed"]["bops"] <= 0.03 * report["dense"]["bops"] * (1 + 1e-9)
    bits = {v for k, v in result.exported.assignment.items() if k.startswith("weight_bits:")}
    assert bits and all(4 <= b <= 8 for b in bits)
    assert {q.weight_bits for q in quantized_layers(result.model).values()} == bits
