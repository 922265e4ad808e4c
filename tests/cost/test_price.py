"""`price`: any assignment of knobs, hard or relaxed, costed by the one analytic model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netdiet
from netdiet.cost import metric_value, price, rank_pays
from netdiet.errors import ConfigError
from netdiet.space import Assignment


@pytest.fixture(scope="module")
def mlp() -> netdiet.Space:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    return netdiet.analyze(model, torch.randn(1, 8))


def test_bits_change_bops_and_weight_bytes_as_a_hand_count_says(mlp: netdiet.Space) -> None:
    dense = price(mlp)
    assert dense.flops == 2 * (8 * 16 + 16 * 4)
    assert dense.bops == (8 * 16 + 16 * 4) * 32 * 32
    a = Assignment.of(weight_bits={"0.weight": 4, "2.weight": 4}, act_bits={"2": 8})
    report = price(mlp, a)
    # layer 0: 128 MACs x 4-bit weights x 32-bit inputs; layer 2: 64 MACs x 4 x 8
    assert report.bops == 128 * 4 * 32 + 64 * 4 * 8
    assert report.flops == dense.flops  # bits do not change FLOPs
    # weights at 4 bits, biases at their fp32 size
    assert report.weight_bytes == (128 + 64) * 4 / 8 + (16 + 4) * 4
    # widths and bits together: the hidden layer keeps 8 of 16 units
    both = a.with_values({"keep:" + mlp.groups[0].name: torch.arange(8)})
    assert price(mlp, both).bops == 64 * 4 * 32 + 32 * 4 * 8


def test_relaxed_bits_give_the_gradient_of_bops(mlp: netdiet.Space) -> None:
    bits = torch.tensor(4.0, requires_grad=True)
    value = metric_value(mlp, {"weight_bits:0.weight": bits}, "bops")
    value.backward()
    assert float(value.detach()) == pytest.approx(128 * 4 * 32 + 64 * 32 * 32)
    assert float(bits.grad) == pytest.approx(128 * 32)


def test_ranks_are_priced_from_kept_directions_and_only_where_they_pay() -> None:
    space = netdiet.analyze(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)), torch.randn(1, 64))
    dense = price(space).flops
    low = price(space, Assignment.of(ranks={"0.weight": torch.arange(8)})).flops
    assert low == dense - 2 * 64 * 64 + 2 * 8 * (64 + 64)
    # rank 40 costs more than dense (40 * 128 > 64 * 64): priced as the dense layer
    assert price(space, Assignment.of(ranks={"0.weight": 40})).flops == dense
    assert rank_pays(space, "0.weight", {}, 8) and not rank_pays(space, "0.weight", {}, 40)


def test_an_unknown_metric_or_a_missing_latency_model_is_named(mlp: netdiet.Space) -> None:
    with pytest.raises(ConfigError, match="unknown metric 'speed'"):
        metric_value(mlp, None, "speed")
    with pytest.raises(ConfigError, match="needs a latency model"):
        metric_value(mlp, None, "latency_ms")
