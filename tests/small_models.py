"""Small models shared by the tests: a three-conv CNN with BatchNorm whose widths the test chooses."""

from __future__ import annotations

import torch
from torch import nn


def conv_stack(
    widths: tuple[int, int, int] = (16, 32, 32), classes: int = 4, dropout: float | None = None
) -> nn.Sequential:
    """conv(3->a) BN ReLU, conv(a->b, stride 2) BN ReLU, conv(b->c) BN ReLU, pool, [dropout,] linear;
    seeded. A dropout module is there whenever `dropout` is given (0.0 included)."""
    torch.manual_seed(0)
    a, b, c = widths
    return nn.Sequential(
        nn.Conv2d(3, a, 3, padding=1),
        nn.BatchNorm2d(a),
        nn.ReLU(),
        nn.Conv2d(a, b, 3, padding=1, stride=2),
        nn.BatchNorm2d(b),
        nn.ReLU(),
        nn.Conv2d(b, c, 3, padding=1),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        *([nn.Dropout(dropout)] if dropout is not None else []),
        nn.Linear(c, classes),
    )
