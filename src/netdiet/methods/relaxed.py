"""The l1/l2 relaxed count S(a) = ||a||_1^2 / ||a||_2^2 of a non-negative gate vector."""

from __future__ import annotations

import torch

EPS = 1e-12


def relaxed_count(a: torch.Tensor) -> torch.Tensor:
    """Lies in [1, ||a||_0] for a != 0, equals the count when all non-zero entries are equal, and is
    invariant to rescaling a: shrinking every gate does not lower it, only making some gates small
    relative to the others does. That is why it counts units instead of measuring weight."""
    a = a.abs()
    # clamp rather than add: an added epsilon pulls S below 1 for small gates and breaks scale invariance
    return a.sum() ** 2 / a.pow(2).sum().clamp_min(EPS)


def readoff_threshold(a: torch.Tensor) -> torch.Tensor:
    """Gates below ||a||_2^2 / ||a||_1 are the ones S(a) pushes to zero."""
    a = a.abs()
    return a.pow(2).sum() / (a.sum() + EPS)
