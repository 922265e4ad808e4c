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


def tiny_t5(layers: int = 2) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A small HF T5ForConditionalGeneration (random weights, no dropout) and its keyword inputs;
    skipped where transformers is missing."""
    import pytest

    transformers = pytest.importorskip("transformers")
    cfg = transformers.T5Config(
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=layers,
        num_decoder_layers=2,
        num_heads=4,
        use_cache=False,
        dropout_rate=0.0,
    )
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(0, 64, (2, 7), generator=gen),
        "decoder_input_ids": torch.randint(0, 64, (2, 5), generator=gen),
    }
    return transformers.T5ForConditionalGeneration(cfg).eval(), inputs
