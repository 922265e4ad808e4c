"""The l1/l2 method: gates + relaxed counts + the engine's cost model as a differentiable surrogate.

Gates a >= 0 on every group and singular-value gates b on factorisable layers; the surrogate cost is
`netdiet.cost` evaluated at the relaxed counts S(a), S(b) (no second FLOPs formula: at a = 1 it is the
exact dense cost). The penalty lambda * surrogate / dense is added to the task loss; lambda follows dual
ascent so the relaxed cost settles at the budget; read-off thresholds the gates and an exact greedy
fix-up puts the exported cost in [budget - tolerance, budget].
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netdiet.cost import cost
from netdiet.errors import ConfigError
from netdiet.export.slicing import copy_model
from netdiet.methods.base import Method
from netdiet.methods.budget import Budget
from netdiet.methods.controller import DualAscent
from netdiet.methods.gates import GateSet, attach_gates, fold_gates, rank_pays
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
        self, model: nn.Module, space: Space, budget: Budget, config: L1L2Config | None = None
    ) -> None:
        super().__init__(model, space, budget)
        self.config = config or L1L2Config()
        self.model = copy_model(model)
        self.gates: GateSet = attach_gates(space, self.model, lowrank=self.config.lowrank)
        self.check_feasible(minimum_cost(space, self.metric, self.gates.rank_names))
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
        value = getattr(cost(self.space, counts, ranks=ranks, per_layer=False), self.metric)
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
        group_gates = {n: self.gates.group(n).detach() for n in self.gates.group_names}
        rank_gates = {w: self.gates.rank(w).detach() for w in self.gates.rank_names}
        setting = read_off(
            self.space, group_gates, rank_gates, self.metric, self.target, self.config.tolerance
        )
        counts, _ = setting.counts()
        for weight, kept in list(setting.ranks.items()):
            if not rank_pays(self.space, weight, counts, int(kept.numel())):
                # a dense layer costs the same at any rank: keep every direction, lose nothing
                setting.ranks[weight] = torch.arange(rank_gates[weight].numel())
        return setting

    def weights_for_export(self, setting: Setting) -> nn.Module:
        """Zero the gates of dropped units and directions, then fold every gate into the weights."""
        folded = copy.deepcopy(self.model)  # its parametrizations share one copied GateSet
        gates = _gateset_of(folded)
        with torch.no_grad():
            if gates is not None:
                for name, idx in setting.keep.items():
                    g = gates.group(name)
                    mask = torch.zeros_like(g, dtype=torch.bool)
                    mask[idx] = True
                    g.masked_fill_(~mask, 0.0)
                for weight, idx in setting.ranks.items():
                    b = gates.rank(weight)
                    mask = torch.zeros_like(b, dtype=torch.bool)
                    mask[idx] = True
                    b.masked_fill_(~mask, 0.0)
        fold_gates(folded)
        return folded


def _gateset_of(model: nn.Module) -> GateSet | None:
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module):
            plists: Any = module.parametrizations
            for plist in plists.values():
                for p in plist:
                    gates = getattr(p, "_gates", None)
                    if gates is not None:
                        return gates
    return None
