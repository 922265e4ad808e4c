"""The l1/l2 method: gates + relaxed counts + the engine's cost model as a differentiable surrogate.

Gates a >= 0 on every group and singular-value gates b on factorisable layers; the surrogate cost is
`netdiet.cost` evaluated at the relaxed counts S(a), S(b) (no second FLOPs formula: at a = 1 it is the
exact dense cost). The penalty lambda * surrogate / dense is added to the task loss; lambda follows dual
ascent so the relaxed cost settles at the budget; read-off thresholds the gates and an exact greedy
fix-up puts the exported cost in [budget - tolerance, budget].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netdiet.cost import cost
from netdiet.cost.latency import LatencyModel
from netdiet.errors import ConfigError
from netdiet.export.slicing import copy_model
from netdiet.methods.base import Method
from netdiet.methods.baselines import unit_norms
from netdiet.methods.budget import Budget
from netdiet.methods.controller import DualAscent
from netdiet.methods.gates import GateSet, attach_gates, rank_pays
from netdiet.methods.readoff import Setting, minimum_cost, read_off
from netdiet.methods.relaxed import relaxed_count
from netdiet.space import Space


@dataclass
class L1L2Config:
    lowrank: bool = True
    gate_lr: float = 0.02
    lambda_lr: float = 0.05
    warmup_steps: int = 0
    tolerance: float = 0.01

    def __post_init__(self) -> None:
        if self.gate_lr <= 0:
            raise ConfigError(f"gate_lr must be > 0, got {self.gate_lr}")
        if not 0 < self.tolerance < 0.5:
            raise ConfigError(f"tolerance must be in (0, 0.5), got {self.tolerance}")


class L1L2(Method):
    name = "l1l2"

    def __init__(
        self,
        model: nn.Module,
        space: Space,
        budget: Budget,
        config: L1L2Config | None = None,
        latency: LatencyModel | None = None,
    ) -> None:
        super().__init__(model, space, budget, latency)
        self.config = config or L1L2Config()
        self.model = copy_model(model)
        # latency tables time dense layers, not factorised pairs: under a latency budget a rank would be
        # priced as free, so singular-value gates are off there
        lowrank = self.config.lowrank and self.latency is None
        self.gates: GateSet = attach_gates(space, self.model, lowrank=lowrank)
        self.check_feasible(
            minimum_cost(space, self.metric, self.gates.rank_names, self.latency, self.multiples)
        )
        self.optimizer = torch.optim.Adam(self.gates.parameters(), lr=self.config.gate_lr)
        self.controller = DualAscent(lr=self.config.lambda_lr, warmup_steps=self.config.warmup_steps)
        self.last_surrogate = self.dense

    # ----- training -------------------------------------------------------------------------------
    def relaxed_counts(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        counts = {name: relaxed_count(self.gates.group(name)) for name in self.gates.group_names}
        ranks = {w: relaxed_count(self.gates.rank(w)) for w in self.gates.rank_names}
        return counts, ranks

    def surrogate(self) -> torch.Tensor:
        counts, ranks = self.relaxed_counts()
        value = getattr(
            cost(self.space, counts, ranks=ranks, per_layer=False, latency=self.latency), self.metric
        )
        return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))

    def penalty(self) -> torch.Tensor:
        s = self.surrogate()
        self.last_surrogate = float(s.detach())
        return self.controller.lam * s / self.dense

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.gates.project()
        self.controller.update(self.last_surrogate / self.target)

    @property
    def lam(self) -> float:
        return self.controller.lam

    # ----- read-off -------------------------------------------------------------------------------
    def read_off(self) -> Setting:
        """Counts from the relaxed counts S(a), S(b); order from what each unit now carries.

        A unit's importance is the norm of its weights with the gates folded in (gate x weight), and a
        singular direction's is b_i * |u_i| * |v_i|: early in training, when gates are still near 1,
        that is magnitude pruning; as gates separate, they dominate.
        """
        counts, ranks = self.relaxed_counts()
        start = {n: round(float(v.detach())) for n, v in counts.items()}
        start.update({w: round(float(v.detach())) for w, v in ranks.items()})
        folded = self.weights_for_export(None)
        scores = unit_norms(self.space, folded)
        rank_scores = self._rank_importance()
        setting = read_off(
            self.space,
            scores,
            rank_scores,
            self.metric,
            self.target,
            self.config.tolerance,
            start_counts=start,
            latency=self.latency,
            multiples=self.multiples,
        )
        keep_counts, _ = setting.counts()
        for weight, kept in list(setting.ranks.items()):
            if not rank_pays(self.space, weight, keep_counts, int(kept.numel())):
                # a dense layer costs the same at any rank: keep every direction, lose nothing
                setting.ranks[weight] = torch.arange(rank_scores[weight].numel())
        return setting

    def _rank_importance(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for weight in self.gates.rank_names:
            info = self.space.analysis.params[weight]
            module = self.model.get_submodule(info.module_path) if info.module_path else self.model
            plists: Any = module.parametrizations
            originals = plists[info.attr]
            u, v = originals.original0.detach(), originals.original1.detach()
            b = self.gates.rank(weight).detach().abs()
            out[weight] = b * u.norm(dim=0) * v.norm(dim=1)
        return out

    def weights_for_export(self, setting: Setting | None) -> nn.Module:
        """A plain copy of the original architecture holding the gated model's effective weights.

        With a setting, the gates of dropped units and directions are zeroed first (temporarily). The
        parametrizations are read, never removed: torch shares the parametrized class between a module
        and its deep copy, so removing them from a copy would break the model being trained.
        """
        saved = [p.detach().clone() for p in self.gates.parameters()]
        try:
            with torch.no_grad():
                if setting is not None:
                    for name, idx in setting.keep.items():
                        _zero_except(self.gates.group(name), idx)
                    for weight, idx in setting.ranks.items():
                        _zero_except(self.gates.rank(weight), idx)
                state = {key: _effective(self.model, key) for key in self.original.state_dict()}
        finally:
            with torch.no_grad():
                for p, value in zip(self.gates.parameters(), saved):
                    p.copy_(value)
        plain = copy_model(self.original)
        plain.load_state_dict(state)
        return plain


def _zero_except(gate: torch.Tensor, keep: torch.Tensor) -> None:
    mask = torch.zeros_like(gate, dtype=torch.bool)
    mask[keep] = True
    gate.masked_fill_(~mask, 0.0)


def _effective(model: nn.Module, key: str) -> torch.Tensor:
    path, _, attr = key.rpartition(".")
    owner = model.get_submodule(path) if path else model
    return getattr(owner, attr).detach().clone()
