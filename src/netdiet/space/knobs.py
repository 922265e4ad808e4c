"""Knobs: every choice a method can make about a model, in one currency.

A knob is one decision at one site: how many units of a group to keep (`keep`), how many singular
directions of a layer's weight to keep (`rank`), at how many bits a layer's weight or input
activation is stored and computed (`weight_bits`, `act_bits`), and whether a residual block stays
(`block`: 1) or is dropped whole (0; the graph stage finds which modules can be). Methods choose values for knobs, the cost
stage prices any choice, the export stage makes it real, and the recipe records it, all keyed by the
knob's `id`. The space stage is the only one that decides which knobs a model has.

Ids are `kind:site`, e.g. `keep:layer1.0.conv1.weight`, `rank:fc.weight`, `weight_bits:fc.weight`,
`act_bits:fc`, `block:layer1.1`; they are stable across runs of the same model, so a recipe can be re-applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from netdiet.errors import InvalidKeepError

if TYPE_CHECKING:
    from netdiet.space.space import Space

KNOB_KINDS = ("keep", "rank", "weight_bits", "act_bits", "block")
# bit widths a bit knob may take: the integer formats runtimes and packed storage support, and float
BIT_CHOICES = (2, 3, 4, 5, 6, 7, 8, 16, 32)
FACTORISABLE_OPS = ("linear", "conv", "addmm", "mm")
MIN_RANK_SIZE = 8  # a layer whose smaller side is below this gains nothing from a rank knob


@dataclass(frozen=True)
class Knob:
    """One decision at one site.

    `dense` is the value that leaves the model as it is (all units, full rank, 32 bits); a value must lie
    in [`minimum`, `dense`] and be a multiple of `step` (keep) or one of `choices` (bits).
    """

    id: str
    kind: str
    site: str
    dense: int
    minimum: int = 1
    step: int = 1
    choices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KNOB_KINDS:
            raise ValueError(f"knob kind must be one of {KNOB_KINDS}, got {self.kind!r}")
        if self.id != knob_id(self.kind, self.site):
            raise ValueError(f"knob id {self.id!r} must be {knob_id(self.kind, self.site)!r}")
        lowest = 0 if self.kind == "block" else 1  # a block may be dropped; a group keeps a unit
        if not lowest <= self.minimum <= self.dense:
            raise ValueError(
                f"knob {self.id}: minimum {self.minimum} must be in [{lowest}, dense={self.dense}]"
            )

    @property
    def is_bits(self) -> bool:
        return self.kind in ("weight_bits", "act_bits")

    def check(self, value: int) -> int:
        """The value as an int if it is allowed for this knob; otherwise a clear error."""
        v = int(value)
        if v != value:
            raise InvalidKeepError(f"knob {self.id}: value {value!r} is not a whole number")
        if self.choices and v not in self.choices:
            raise InvalidKeepError(
                f"knob {self.id}: {v} bits is not one of the supported widths {self.choices}"
            )
        if not self.minimum <= v <= self.dense:
            raise InvalidKeepError(f"knob {self.id}: {v} is outside [{self.minimum}, {self.dense}]")
        if self.step > 1 and v % self.step and v != self.dense:
            raise InvalidKeepError(f"knob {self.id}: {v} is not a multiple of {self.step}")
        return v

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "site": self.site,
            "dense": self.dense,
            "minimum": self.minimum,
        }
        if self.step > 1:
            out["step"] = self.step
        if self.choices:
            out["choices"] = list(self.choices)
        return out


def knob_id(kind: str, site: str) -> str:
    return f"{kind}:{site}"


def split_id(kid: str) -> tuple[str, str]:
    """(kind, site) of a knob id; a clear error for anything else."""
    kind, sep, site = kid.partition(":")
    if not sep or kind not in KNOB_KINDS or not site:
        raise InvalidKeepError(f"'{kid}' is not a knob id (expected KIND:SITE with KIND one of {KNOB_KINDS})")
    return kind, site


def build_knobs(space: Space) -> list[Knob]:
    """Every knob of `space`: keep per group, rank per factorisable weight, bits per weighted layer."""
    knobs = [
        Knob(knob_id("keep", g.name), "keep", g.name, g.size, g.min_keep, max(1, g.multiple_of))
        for g in space.groups
    ]
    for weight, full_rank in factorisable(space).items():
        knobs.append(Knob(knob_id("rank", weight), "rank", weight, full_rank, 1))
    for site in space.layers:
        knobs.append(
            Knob(knob_id("weight_bits", site.weight), "weight_bits", site.weight, 32, 2, choices=BIT_CHOICES)
        )
    for layer in dict.fromkeys(site.name for site in space.layers):
        knobs.append(Knob(knob_id("act_bits", layer), "act_bits", layer, 32, 2, choices=BIT_CHOICES))
    for block in space.analysis.blocks:
        knobs.append(Knob(knob_id("block", block.module_path), "block", block.module_path, 1, 0))
    return knobs


def factorisable(space: Space) -> dict[str, int]:
    """Weights worth a rank knob, with their full rank: ungrouped conv/linear weights whose smaller
    side is at least MIN_RANK_SIZE (below that a factorisation cannot pay enough to matter)."""
    out: dict[str, int] = {}
    for site in space.layers:
        info = space.param_info(site.weight)
        if info is None or len(info.shape) < 2 or site.op not in FACTORISABLE_OPS:
            continue
        module = space.model.get_submodule(info.module_path) if info.module_path else space.model
        if getattr(module, "groups", 1) != 1 or not isinstance(
            module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
        ):
            continue
        rows = info.shape[space.out_dim(site.weight)]
        cols = math.prod(info.shape) // rows
        if min(rows, cols) >= MIN_RANK_SIZE:
            out[site.weight] = min(rows, cols)
    return out
