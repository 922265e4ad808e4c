"""Schedule, optimizer groups, losses and config validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from netdiet.train import (
    TrainConfig,
    build_optimizer,
    cosine_with_warmup,
    distillation_loss,
    split_decay,
    training_loss,
)


def test_schedule_warms_up_linearly_then_decays_to_min() -> None:
    lrs = [cosine_with_warmup(s, 100, 10, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert cosine_with_warmup(55, 100, 10, 1.0) == pytest.approx(0.5)


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.channel_gate = nn.Parameter(torch.ones(1, 4, 1, 1))


def test_no_weight_decay_on_norms_biases_and_gates() -> None:
    m = Gated()
    decay, no_decay = split_decay(m, ("gate",))
    assert {id(p) for p in decay} == {id(m.conv.weight), id(m.fc.weight)}
    assert id(m.channel_gate) in {id(p) for p in no_decay}
    opt = build_optimizer(m, TrainConfig(weight_decay=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_losses() -> None:
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    target = torch.tensor([0, 1])
    assert training_loss(logits, target, label_smoothing=0.2) > training_loss(logits, target)
    assert distillation_loss(logits, logits, 3.0) == pytest.approx(0.0, abs=1e-6)
    mixed = training_loss(logits, target, teacher_logits=-logits, kd_alpha=0.5)
    assert mixed > training_loss(logits, target)
    assert math.isfinite(float(mixed))


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("optimizer", "lamb"), ("lr", -1.0), ("label_smoothing", 1.0), ("warmup_epochs", 5.0),
     ("grad_clip", 0.0), ("amp", "maybe"), ("kd_alpha", 2.0)],
)  # fmt: skip
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_config_json_round_trip() -> None:
    cfg = TrainConfig(epochs=3, optimizer="adamw", betas=(0.8, 0.9))
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_json({"epochz": 1})
