"""Sub-networks as one channel count per group: the space the search methods (amc, evolution,
knapsack) move in.

A candidate is a count per group on the group's step (the channel multiple the latency table measured
to pay, else 1). Which units a count keeps is fixed by an importance order (weight norms unless the
method brings its own scores), so a candidate is a point in a small integer space that the cost model
prices exactly and the evaluator scores on the masked model. The helpers here are what every search
needs: the choices, the exact price, the assignment, a repair to the budget, and what each group is
(its kind, sizes, stride, kernel) for a learned policy's state.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.methods.base import Method
from netdiet.methods.context import MethodContext
from netdiet.methods.importance import unit_norms
from netdiet.space import Assignment

Counts = dict[str, int]
KINDS = ("channel", "head", "neuron", "hidden")
KEEP_BLOCK_PROB = 0.8  # a random candidate keeps each droppable block with this probability


@dataclass(frozen=True)
class GroupFacts:
    """What a policy can know about a group: its producing layer's shape, stride and kernel."""

    kind: int  # index into KINDS (len(KINDS) for anything else)
    size: int
    in_size: int
    stride: int
    kernel: int


class Subnets:
    """The count space of a context's groups, with an importance order per group (most important
    first) that decides which units a count keeps."""

    def __init__(
        self,
        context: MethodContext,
        model: nn.Module,
        order: Mapping[str, torch.Tensor] | None = None,
        *,
        bit_choices: Mapping[str, Sequence[int]] | None = None,
        fixed_bits: Mapping[str, int] | None = None,
        block_genes: Sequence[str] = (),
    ):
        """`bit_choices`: bit knob id -> the widths a candidate may give it (genes beside the counts);
        `fixed_bits`: bit knob id -> the width every candidate has (e.g. 8-bit activations);
        `block_genes`: block knob ids a candidate keeps (1) or drops (0)."""
        self.context = context
        self.groups = list(context.space.groups)
        self.names = [g.name for g in self.groups]
        self.model = model
        self.choices: dict[str, list[int]] = {}
        for g in self.groups:
            m = int(context.multiples.get(g.name, 1))
            low = max(g.min_keep, m)
            values = set(range(low, g.size + 1, m)) | {g.size}
            self.choices[g.name] = sorted(v for v in values if low <= v <= g.size)
        self.bit_ids = list(bit_choices or {})
        for kid, options in (bit_choices or {}).items():
            self.choices[kid] = sorted({int(b) for b in options})
        self.block_ids = list(block_genes)
        for kid in self.block_ids:
            self.choices[kid] = [0, 1]
        self.knob_genes = self.bit_ids + self.block_ids  # genes that are knob values, not counts
        self.genes = self.names + self.knob_genes  # what a candidate sets: counts, then bits, blocks
        self.fixed_bits = {k: int(v) for k, v in (fixed_bits or {}).items()}
        self.set_order(order)

    def set_order(self, order: Mapping[str, torch.Tensor] | None = None) -> None:
        """Which units a count keeps: the top of `order` (scores per unit), default weight norms."""
        scores = dict(order) if order is not None else unit_norms(self.context.space, self.model)
        self.order = {
            name: torch.argsort(scores[name].detach().double(), descending=True, stable=True)
            for name in self.names
        }

    # ----- the space ---------------------------------------------------------------------------------
    def full(self) -> Counts:
        return {n: self.choices[n][-1] for n in self.genes}

    def smallest(self) -> Counts:
        return {n: self.choices[n][0] for n in self.genes}

    def snap(self, name: str, count: float) -> int:
        """The largest choice at most `count` (the smallest choice if none is)."""
        options = self.choices[name]
        best = options[0]
        for v in options:
            if v <= count + 1e-9:
                best = v
        return best

    def from_fractions(self, fractions: Mapping[str, float]) -> Counts:
        """Counts from keep fractions in [0, 1] of each group's range between its smallest choice and
        its size."""
        out = {}
        for n in self.names:
            low, high = self.choices[n][0], self.choices[n][-1]
            f = min(max(float(fractions[n]), 0.0), 1.0)
            out[n] = self.snap(n, low + f * (high - low))
        return out

    def fractions(self, counts: Mapping[str, int]) -> list[float]:
        """Each gene as a fraction of its range (a policy's or predictor's input)."""
        out = []
        for n in self.genes:
            low, high = self.choices[n][0], self.choices[n][-1]
            out.append((counts[n] - low) / (high - low) if high > low else 1.0)
        return out

    # ----- prices and assignments --------------------------------------------------------------------
    def _bits(self, counts: Mapping[str, int]) -> dict[str, int]:
        """The knob values of a candidate besides its counts: fixed and chosen bits, kept blocks."""
        return {**self.fixed_bits, **{k: int(counts[k]) for k in self.knob_genes if k in counts}}

    def price(self, counts: Mapping[str, int]) -> float:
        keep = {n: int(counts[n]) for n in self.names if n in counts}
        return float(self.context.price(Assignment.of(keep=keep).with_values(self._bits(counts))))

    def feasible(self, counts: Mapping[str, int], target: float) -> bool:
        return self.price(counts) <= target

    def assignment(self, counts: Mapping[str, int]) -> Assignment:
        """The knobs of a candidate: the top units of each group's order, and its bits."""
        keep = {n: torch.sort(self.order[n][: int(counts[n])]).values for n in self.names}
        return Assignment.of(keep=keep).with_values(self._bits(counts))

    def repair(self, counts: Mapping[str, int], target: float, rng: random.Random) -> Counts:
        """`counts` made feasible: while over the budget, one step down a gene (a group's count, or a
        layer's bits) drawn with probability proportional to how much of it is still kept, so repairs
        shrink roughly in proportion and keep a population diverse. Raises ConfigError when even the smallest counts are over."""
        out = dict(counts)
        value = self.price(out)
        while value > target:
            movable = [n for n in self.genes if out[n] > self.choices[n][0]]
            if not movable:
                raise ConfigError(
                    f"no sub-network meets {self.context.metric} <= {target:.4g}: the smallest costs {value:.4g}"
                )
            weights = [out[n] / self.choices[n][-1] for n in movable]
            name = rng.choices(movable, weights=weights)[0]
            options = self.choices[name]
            out[name] = options[options.index(out[name]) - 1]
            value = self.price(out)
        return out

    def random(self, rng: random.Random) -> Counts:
        """A random candidate: a global keep level plus a per-group spread, so samples cover both thin
        and wide networks (uniform per-group choices all sit near the mean width)."""
        level = rng.random()
        out = self.from_fractions(
            {n: min(1.0, max(0.0, level + rng.uniform(-0.35, 0.35))) for n in self.names}
        )
        out.update({k: rng.choice(self.choices[k]) for k in self.bit_ids})
        out.update({k: int(rng.random() < KEEP_BLOCK_PROB) for k in self.block_ids})
        return out

    # ----- what a group is ---------------------------------------------------------------------------
    def facts(self) -> list[GroupFacts]:
        out = []
        for g in self.groups:
            layer = None
            for member in g.members:
                info = self.context.space.param_info(member.param)
                if info is None or member.dim != 0:
                    continue
                module = self.model.get_submodule(info.module_path)
                if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                    layer = module
                    break
            in_size = stride = kernel = 1
            if isinstance(layer, nn.Linear):
                in_size = layer.in_features
            elif layer is not None:
                in_size = int(layer.in_channels)  # type: ignore[arg-type]
                stride = int(layer.stride[0])  # type: ignore[index]
                kernel = int(layer.kernel_size[0])  # type: ignore[index]
            kind = KINDS.index(g.kind) if g.kind in KINDS else len(KINDS)
            out.append(GroupFacts(kind, g.size, in_size, stride, kernel))
        return out


class SubnetSearch(Method):
    """A method that searches the count space with the caller's evaluator (amc, evolution): `search()`
    sets `self.best` = (its score, counts) and the read-off is that candidate."""

    needs_evaluator = True

    def __init__(self, model: nn.Module, context: MethodContext, config: object = None) -> None:
        super().__init__(model, context, config)
        self.subnets = self.make_subnets(context, model)
        self.check_feasible(self.subnets.price(self.subnets.smallest()))
        self.best: tuple[float, Counts] | None = None

    def make_subnets(self, context: MethodContext, model: nn.Module) -> Subnets:
        """The space searched (a method that searches bits too adds them as genes)."""
        return Subnets(context, model)

    def search(self) -> Counts:
        raise NotImplementedError

    def read_off(self) -> Assignment:
        if self.best is None:
            self.search()
        assert self.best is not None
        return self.subnets.assignment(self.best[1])
