"""`knapsack`: hardware-aware latency pruning as a knapsack (HALP, Shen et al., NeurIPS 2022), applied
progressively while the model trains.

Every unit's importance is its first-order Taylor score, (sum over its weights of gradient x weight)^2,
averaged over the steps since the last pruning event. At `pruning_steps` events spread over the first
`prune_fraction` of the training phase the model is pruned to k/K of the way from dense to the budget:
each group offers its channel counts (on the latency table's steps, never more than it still keeps)
with value = the summed importance of the units that count keeps and cost = what that count adds to the
budget's metric with every other group where it is now (HALP's latency cost of a layer's channels given
its input's). The choice of one count per group that maximises value within the budget is a
multiple-choice knapsack, solved exactly by scipy's MILP solver; because costs of neighbouring groups
interact (a layer's latency depends on its input and output counts), the knapsack's capacity is then
bisected until the exact price of the chosen counts meets the event's target. Pruned units are zeroed
after every optimizer step from then on (once pruned, always pruned), and the read-off keeps what the
last event kept; the usual fine-tune follows.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from netdiet.errors import ConfigError, NonFiniteError
from netdiet.methods.base import Method
from netdiet.methods.context import MethodContext
from netdiet.methods.importance import unit_norms
from netdiet.methods.readoff import minimum_cost, read_off
from netdiet.methods.registry import register_method
from netdiet.methods.subnets import Subnets
from netdiet.space import Assignment


def solve_choice_knapsack(values: list[list[float]], costs: list[list[float]], capacity: float) -> list[int]:
    """The option index per group that maximises the summed value with summed cost <= capacity (one
    option per group; exact, by mixed-integer programming). Raises ConfigError when no choice fits."""
    sizes = [len(v) for v in values]
    if any(len(v) != len(c) or not v for v, c in zip(values, costs)) or len(values) != len(costs):
        raise ValueError("values and costs need the same non-empty option lists per group")
    n = sum(sizes)
    value = np.concatenate([np.asarray(v, dtype=float) for v in values])
    cost = np.concatenate([np.asarray(c, dtype=float) for c in costs])
    if float(sum(min(c) for c in costs)) > capacity + 1e-9:
        raise ConfigError(f"no choice fits the knapsack's capacity {capacity:.4g}")
    one_each = np.zeros((len(values), n))
    start = 0
    for g, k in enumerate(sizes):
        one_each[g, start : start + k] = 1.0
        start += k
    scale = max(float(np.abs(value).max()), 1e-30)  # the solver's tolerances are absolute
    result = milp(
        c=-value / scale,
        constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(cost[None, :], -np.inf, capacity)],
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
    )
    if result.x is None:
        raise ConfigError(f"the knapsack solver found no solution: {result.message}")
    x = np.round(result.x)
    out, start = [], 0
    for k in sizes:
        out.append(int(np.argmax(x[start : start + k])))
        start += k
    return out


@dataclass
class KnapsackConfig:
    """`pruning_steps` events over the first `prune_fraction` of the training phase; the last one
    reaches the budget, the rest of the phase trains the pruned model. `tolerance`: the exported cost
    lands in [budget * (1 - tolerance), budget] where the steps allow."""

    pruning_steps: int = 10
    prune_fraction: float = 0.5
    tolerance: float = 0.02

    def __post_init__(self) -> None:
        if self.pruning_steps < 1:
            raise ConfigError(f"pruning_steps must be >= 1, got {self.pruning_steps}")
        if not 0 < self.prune_fraction <= 1:
            raise ConfigError(f"prune_fraction must be in (0, 1], got {self.prune_fraction}")
        if not 0 < self.tolerance < 0.5:
            raise ConfigError(f"tolerance must be in (0, 0.5), got {self.tolerance}")


@register_method("knapsack")
class Knapsack(Method):
    Config = KnapsackConfig
    config: KnapsackConfig
    needs_training = True
    min_steps = 20

    def __init__(
        self, model: nn.Module, context: MethodContext, config: KnapsackConfig | None = None
    ) -> None:
        super().__init__(model, context, config)
        self.check_feasible(minimum_cost(context, []))
        self.model = copy.deepcopy(model)  # pruned while it trains: the user's model stays whole
        self.subnets = Subnets(context, self.model)
        self.kept: dict[str, list[int]] = {g.name: list(range(g.size)) for g in self.space.groups}
        self.taylor: dict[str, torch.Tensor] = {}
        self.stat_steps = 0
        self.steps = 0
        self.events = 0
        self.total_steps: int | None = None
        self.trace: list[dict[str, Any]] = []
        self._zero: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    def begin(self, total_steps: int) -> None:
        if total_steps < 1:
            raise ConfigError(f"knapsack needs at least one training step, got total_steps={total_steps}")
        self.total_steps = int(total_steps)

    def event_step(self, k: int) -> int:
        """The optimizer step after which pruning event k (1-based) happens."""
        assert self.total_steps is not None
        span = max(1, int(math.floor(self.config.prune_fraction * self.total_steps)))
        return max(1, int(round(k * span / self.config.pruning_steps)))

    # ----- training ---------------------------------------------------------------------------------
    def step(self, loss: float | None = None) -> None:
        if self.total_steps is None:
            raise ConfigError(
                "knapsack spreads its pruning events over the training run and needs its length: call "
                "compressor.begin(total_steps) before training (netdiet.compress and the trainer do this)"
            )
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteError(
                f"knapsack: non-finite loss ({loss}) at step {self.steps + 1}; lower the learning rate",
                step=self.steps + 1,
                what="loss",
                value=loss,
            )
        self.steps += 1
        self._accumulate()
        while self.events < self.config.pruning_steps and self.steps >= self.event_step(self.events + 1):
            self.prune(self.events + 1)
        self._apply_masks()
        self.trace.append(
            {
                "step": self.steps,
                "loss": loss,
                "events": self.events,
                "kept_units": sum(len(v) for v in self.kept.values()),
                "cost_ratio": self.subnets.price({n: len(v) for n, v in self.kept.items()}) / self.reference,
            }
        )

    def _params(self) -> dict[str, torch.Tensor]:
        return dict(self.model.named_parameters())

    def _accumulate(self) -> None:
        params = self._params()
        got = False
        for group in self.space.groups:
            tg = torch.zeros(group.size, dtype=torch.float64)
            for member in group.members:
                t = params.get(member.param)
                if t is None or t.grad is None:
                    continue
                got = True
                idx = self.space.member_units(member, group)
                valid = idx >= 0
                x = t.detach().double().movedim(member.dim, 0).reshape(t.shape[member.dim], -1)
                g = t.grad.detach().double().movedim(member.dim, 0).reshape(t.shape[member.dim], -1)
                tg.index_add_(0, idx[valid], (x * g).sum(1)[valid])
            self.taylor[group.name] = self.taylor.get(group.name, torch.zeros_like(tg)) + tg.pow(2)
        if got:
            self.stat_steps += 1

    def importance(self) -> dict[str, torch.Tensor]:
        """Mean Taylor score per unit since the last event (weight norms before any gradient); pruned
        units get -inf, so no count can bring them back."""
        if self.stat_steps:
            scores = {n: v / self.stat_steps for n, v in self.taylor.items()}
        else:
            scores = {n: v.pow(2) for n, v in unit_norms(self.space, self.model).items()}
        out = {}
        for g in self.space.groups:
            s = scores[g.name].clone()
            pruned = sorted(set(range(g.size)) - set(self.kept[g.name]))
            if pruned:
                s[pruned] = -math.inf
            out[g.name] = s
        return out

    # ----- one pruning event ------------------------------------------------------------------------
    def _target_of(self, k: int) -> float:
        if k >= self.config.pruning_steps:
            return self.target
        return self.dense - (k / self.config.pruning_steps) * max(0.0, self.dense - self.target)

    def solve(self, target: float, scores: dict[str, torch.Tensor]) -> dict[str, int]:
        """Counts per group within `target` that keep the most importance (see the module docstring)."""
        s = self.subnets
        s.set_order(scores)
        current = {n: len(self.kept[n]) for n in s.names}
        options = {n: [c for c in s.choices[n] if c <= current[n]] or [s.choices[n][0]] for n in s.names}
        values, costs = [], []
        for n in s.names:
            ranked = scores[n][s.order[n]].clamp_min(0.0).double()
            cum = torch.cumsum(ranked, 0)
            values.append([float(cum[c - 1]) for c in options[n]])
            base = s.price({**current, n: options[n][0]})
            costs.append([s.price({**current, n: c}) - base for c in options[n]])
        floor = s.price({n: options[n][0] for n in s.names})
        if floor > target:
            raise ConfigError(
                f"knapsack: {self.metric} <= {target:.4g} is out of reach from the units still kept (smallest "
                f"{floor:.4g})"
            )
        best: dict[str, int] | None = None
        lo, hi = 0.0, 2.0 * max(target - floor, 1e-12)
        capacity = max(target - floor, 0.0)
        for _ in range(14):
            try:
                pick = solve_choice_knapsack(values, costs, capacity)
            except ConfigError:
                pick = None
            counts = (
                {n: options[n][i] for n, i in zip(s.names, pick)}
                if pick
                else {n: options[n][0] for n in s.names}
            )
            value = s.price(counts)
            if value <= target:
                best = counts
                if value >= target * (1 - self.config.tolerance):
                    break
                lo = capacity
            else:
                hi = capacity
            capacity = (lo + hi) / 2
        if best is None:  # the knapsack's additive costs misjudged this model: the greedy exact read-off
            fixed = read_off(
                self.context,
                scores_for_readoff(scores),
                {},
                target,
                self.config.tolerance,
                start="full",
                normalise=False,
            )
            best = {n: int(v.numel()) for n, v in fixed.keep.items()}
        return best

    def prune(self, k: int) -> None:
        scores = self.importance()
        target = self._target_of(k)
        counts = self.solve(target, scores)
        for n, c in counts.items():
            self.kept[n] = sorted(int(i) for i in self.subnets.order[n][:c])
        self.events = k
        self.taylor, self.stat_steps = {}, 0
        self._zero = self._pruned_slices()
        self._apply_masks()

    def _pruned_slices(self) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
        params = self._params()
        out = []
        for group in self.space.groups:
            keep = torch.zeros(group.size, dtype=torch.bool)
            keep[self.kept[group.name]] = True
            if bool(keep.all()):
                continue
            for member in group.members:
                t = params.get(member.param)
                if t is None:
                    continue
                idx = self.space.member_units(member, group)
                pos = torch.nonzero((idx >= 0) & ~keep[idx.clamp_min(0)]).flatten()
                if pos.numel():
                    out.append((t, member.dim, pos))
        return out

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for t, dim, pos in self._zero:
            t.index_fill_(dim, pos, 0.0)

    # ----- read-off and resume ----------------------------------------------------------------------
    def read_off(self) -> Assignment:
        """What the last event kept; a run that stopped before it is pruned to the budget now."""
        if self.events < self.config.pruning_steps:
            self.prune(self.config.pruning_steps)
        keep = {n: torch.tensor(v, dtype=torch.long) for n, v in self.kept.items()}
        return Assignment.of(keep=keep)

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "events": self.events,
            "kept": {n: list(v) for n, v in self.kept.items()},
            "taylor": {n: v.clone() for n, v in self.taylor.items()},
            "stat_steps": self.stat_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.events = int(state["events"])
        self.kept = {n: [int(i) for i in v] for n, v in state["kept"].items()}
        self.taylor = {n: v.clone() for n, v in state["taylor"].items()}
        self.stat_steps = int(state["stat_steps"])
        self._zero = self._pruned_slices()

    def status(self) -> dict[str, float]:
        return {"events": float(self.events)}

    def search_record(self) -> dict[str, Any]:
        return {"pruning_events": self.events, "kept_units": sum(len(v) for v in self.kept.values())}


def scores_for_readoff(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Importance with pruned units (-inf) at zero, for the greedy read-off."""
    return {n: torch.where(torch.isfinite(v), v, torch.zeros_like(v)) for n, v in scores.items()}
