"""The candidate scorer of search methods: BatchNorm statistics re-estimated on fixed training
batches, the held-out examples capped and the same for every call."""

from __future__ import annotations

import torch
from torch import nn

from netdiet.data.batch import Batch
from netdiet.train.subnet_score import BatchList, SubnetScorer, reestimate_batchnorm, take


def batches(n: int, shift: float, seed: int) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [
        Batch((torch.randn(16, 4, generator=g) * 2 + shift,), torch.randint(0, 3, (16,), generator=g))
        for _ in range(n)
    ]


def test_running_statistics_become_the_average_over_the_batches() -> None:
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
    model[1].momentum = 0.1
    model.eval()  # the scorer's masked copies are in eval mode, and stay so
    data = batches(3, shift=5.0, seed=0)
    assert reestimate_batchnorm(model, data) == 1
    xs = torch.cat([b.inputs[0] for b in data])
    expected = torch.stack([b.inputs[0].mean(0) for b in data]).mean(0)
    assert torch.allclose(model[1].running_mean, expected, atol=1e-5)
    assert abs(float(model[1].running_mean.mean()) - float(xs.mean())) < 1e-4
    assert model[1].momentum == 0.1 and not model.training


def test_the_scorer_caps_the_held_out_examples_and_scores_the_same_each_call() -> None:
    held_out = BatchList(batches(10, shift=0.0, seed=1))
    assert sum(len(b) for b in take(held_out, 40)) == 40
    scorer = SubnetScorer(held_out, BatchList(batches(6, shift=0.0, seed=2)), max_examples=40, bn_batches=2)
    assert scorer.held_out.num_examples == 40 and len(scorer.bn) == 2
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    a, b = scorer(model), scorer(model)
    assert a == b and 0.0 <= a <= 1.0
    # a model whose BN statistics are wrong for its inputs scores after they are re-estimated
    model[1].running_mean.fill_(100.0)
    assert scorer(model) == a


def test_empty_held_out_data_is_refused_naming_eval_data() -> None:
    import pytest

    from netdiet.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_data"):
        SubnetScorer(BatchList([]), BatchList(batches(1, shift=0.0, seed=0)))
