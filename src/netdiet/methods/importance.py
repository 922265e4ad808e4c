"""Which units to keep: scores that are comparable across groups, from gates, weights and gradients.

The read-off compares units of different groups (a residual stream against a block's inner width), so
every score is divided by its group's mean first. `taylor` is the first-order estimate of how much the
task loss rises when a unit is removed, |a_i * dL/da_i| for its gate a_i, averaged over the gated phase
(one batch's gradient is noise; the average is the signal). `magnitude` is the norm of the unit's
effective weights, gate folded in. `combined` is their geometric mean: a unit must both carry weight and
matter to the loss to rank high, and neither signal's scale dominates.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from netdiet.space import Space

IMPORTANCE = ("combined", "taylor", "magnitude")


def per_group_normalised(scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: s.double() / s.double().mean().clamp(min=1e-30) for n, s in scores.items()}


def combine(
    kind: str,
    magnitude: Mapping[str, torch.Tensor],
    taylor: Mapping[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor]:
    """Scores per unit, one tensor per group or factorised layer; larger = keep."""
    mag = per_group_normalised(magnitude)
    if kind == "magnitude" or not taylor:
        return mag
    tay = per_group_normalised({n: taylor[n] for n in mag if n in taylor})
    if kind == "taylor":
        return {n: tay.get(n, mag[n]) for n in mag}
    return {n: (mag[n] * tay[n]).sqrt() if n in tay else mag[n] for n in mag}


class TaylorAccumulator:
    """Running mean of |gate * task gradient| per gate vector (equal weight for every step seen)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, v in values.items():
            v = v.detach().double().abs()
            self.sums[name] = self.sums[name] + v if name in self.sums else v.clone()
        self.count += 1

    def mean(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            return {}
        return {n: s / self.count for n, s in self.sums.items()}


def unit_norms(space: Space, model: nn.Module) -> dict[str, torch.Tensor]:
    """L2 norm of every unit over all the weights it appears in (both sides: producers and readers)."""
    tensors = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for group in space.groups:
        sq = torch.zeros(group.size, dtype=torch.float64)
        for member in group.members:
            t = tensors.get(member.param)
            if t is None or t.device.type == "meta":
                continue
            idx = space.member_units(member, group)
            per_pos = (
                t.detach().double().pow(2).movedim(member.dim, 0).reshape(t.shape[member.dim], -1).sum(1)
            )
            valid = idx >= 0
            sq.index_add_(0, idx[valid], per_pos[valid])
        out[group.name] = sq.sqrt()
    return out
