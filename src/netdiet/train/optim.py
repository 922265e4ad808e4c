"""Optimizer construction with the usual exclusions from weight decay.

Decaying norm scales, biases or gates pulls them towards zero for no benefit (and for gates it would
fight the sparsity penalty), so they get their own parameter group with weight_decay = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from netdiet.train.config import TrainConfig


def split_decay(model: nn.Module, patterns: tuple[str, ...]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decay, no_decay) trainable parameters: 1-d tensors and names matching a pattern get no decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or any(pat in name for pat in patterns):
            no_decay.append(p)
        else:
            decay.append(p)
    return decay, no_decay


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over two parameter groups."""
    decay, no_decay = split_decay(model, cfg.no_decay_patterns)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
