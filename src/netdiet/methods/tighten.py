"""Tightening a chosen assignment to a lower target, for any method: the measured-latency fix-up.

A latency budget is met by the table's prediction; the exported model can still measure over it, because
the methods pick the settings where the table errs. `tighten` lowers the prediction target by the miss and
removes units from the assignment the method chose (never adds any), the weakest by weight norm first, with
every other knob (blocks, ranks, bits) kept as the method set it. The method's own choice of units is kept
ahead of the units it dropped, so the result is a subset of its setting.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.methods.context import MethodContext
from netdiet.methods.importance import unit_norms
from netdiet.methods.readoff import read_off
from netdiet.space import Assignment


def tighten(context: MethodContext, assignment: Assignment, weights: nn.Module, target: float) -> Assignment:
    """`assignment` with units removed, one paying step at a time, until its price in the context's
    metric is at most `target`. `weights`: the model the units are ranked on (the one exported)."""
    if target <= 0:
        raise ConfigError(f"tighten needs a positive target, got {target}")
    keep = assignment.keep
    others = Assignment({k: v for k, v in assignment.items() if not k.startswith("keep:")})
    fixed = copy.copy(context)
    fixed.fixed = Assignment({**context.fixed, **others})
    norms = unit_norms(context.space, weights)
    scores: dict[str, torch.Tensor] = {}
    chosen: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for group in context.space.groups:
        norm = norms[group.name].float()
        norm = norm / norm.max().clamp(min=1e-12)  # in [0, 1]: comparable across groups
        kept = keep.get(group.name)
        if kept is None:  # the method left the group whole
            kept = torch.arange(group.size)
        chosen[group.name] = torch.zeros(group.size, dtype=torch.bool)
        chosen[group.name][kept] = True
        scores[group.name] = norm + 2.0 * chosen[group.name]  # the method's units first, weakest go first
        counts[group.name] = int(kept.numel())
    # tolerance 1: nothing is restored to fill a window below the target (that would add units)
    out = read_off(fixed, scores, {}, target, tolerance=1.0, start_counts=counts, normalise=False)
    # rounding a count to a paying multiple may round it up: keep only units the method chose
    shrunk = {name: idx[chosen[name][idx]] for name, idx in out.keep.items()}
    return Assignment({**others, **Assignment.of(keep=shrunk)})
