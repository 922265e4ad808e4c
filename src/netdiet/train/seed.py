"""Deterministic seeding of every RNG the training loop touches."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed used at the start of each epoch: a resumed run re-enters an epoch with the same RNG state
    as an uninterrupted one without saving RNG state; ranks differ so dropout masks are independent."""
    return seed * 1_000_003 + epoch * 1_009 + rank
