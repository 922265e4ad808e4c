"""`netdiet.compress`: one call on real (digits) data, the report it returns, and bad input."""

from __future__ import annotations

import pytest
import torch

import netdiet
from netdiet.data import DataSpec, build_data
from netdiet.errors import ConfigError
from netdiet.train import TrainConfig


@pytest.fixture(scope="module")
def digits():
    return build_data(DataSpec("digits", batch_size=64, image_size=16))


def test_compress_one_call_meets_budget_and_reports(digits) -> None:
    torch.manual_seed(0)
    model = netdiet.zoo.build("resnet20", widths=[8, 16, 32])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = netdiet.compress(
        model,
        digits.train,
        "flops=0.5",
        epochs=1,
        finetune_epochs=1,
        eval_data=digits.eval["val"],
        train_config=TrainConfig(lr=0.02, progress=False),
        method_options={"lambda_lr": 0.5},
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    report = result.report
    dense, small = report["dense"], report["compressed"]
    assert 0.49 * dense["flops"] <= small["flops"] <= 0.5 * dense["flops"]
    x = next(iter(digits.train)).inputs
    assert small["flops"] == pytest.approx(
        netdiet.measured_flops(result.model, tuple(t[:1] for t in x)), rel=1e-9
    )
    assert 0.0 <= small["accuracy"] <= 1.0 and small["latency_ms_b1"] > 0
    assert result.recipe["method"] == "l1l2" and result.recipe["budget"] == {"flops": 0.5}
    assert len(result.history) == 2  # one compression epoch, one fine-tune epoch


def test_compress_refuses_unknown_method_and_bad_epochs(digits) -> None:
    model = netdiet.zoo.build("resnet20", widths=[8, 16, 32])
    with pytest.raises(ConfigError, match="unknown method"):
        netdiet.compress(model, digits.train, "flops=0.5", method="nope")
    with pytest.raises(ConfigError, match=">= 0"):
        netdiet.compress(model, digits.train, "flops=0.5", epochs=-1)
