"""What every compression method provides, and the result of reading it off into a slim model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netdiet.cost import cost
from netdiet.errors import ConfigError
from netdiet.export import RECIPE_ATTR, export_model
from netdiet.export.lowrank import factorize, pays
from netdiet.export.verify import verify as verify_outputs
from netdiet.methods.budget import Budget
from netdiet.methods.readoff import Setting
from netdiet.space import Space


@dataclass
class Exported:
    """The slim model and the numbers that prove what it is."""

    model: nn.Module
    setting: Setting
    factorized: dict[str, int]
    dense_cost: dict[str, float]
    cost: dict[str, float]
    budget: dict[str, float]
    recipe: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "dense": self.dense_cost,
            "compressed": self.cost,
            "ratio": {k: self.cost[k] / max(self.dense_cost[k], 1e-12) for k in self.cost},
            "kept": {k: int(v.numel()) for k, v in self.setting.keep.items()},
            "factorized": dict(self.factorized),
        }


class Method:
    """A compression method over a Space: trains (or not) and reads off a setting under the budget.

    Subclasses set `self.model` (what the user trains; may equal a copy of the original) and implement
    `penalty`, `step` and `read_off`.
    """

    name = "base"

    def __init__(self, model: nn.Module, space: Space, budget: Budget) -> None:
        self.original = model
        self.space = space
        self.budget = budget
        self.metric = budget.metric
        self.dense = float(getattr(cost(space, per_layer=False), self.metric))
        self.target = budget.target(self.dense)
        self.model: nn.Module = model

    def check_feasible(self, minimum: float) -> None:
        if minimum > self.target:
            raise ConfigError(
                f"budget {self.metric} <= {self.target:.4g} is below what the model's constraints allow: the "
                f"smallest reachable {self.metric} is {minimum:.4g} ({minimum / self.dense:.1%} of dense "
                f"{self.dense:.4g}). Raise the budget or exclude fewer modules."
            )

    def penalty(self) -> torch.Tensor:
        return torch.zeros(())

    def step(self) -> None:
        """Called after the user's optimizer.step()."""

    def read_off(self) -> Setting:
        raise NotImplementedError

    def weights_for_export(self, setting: Setting | None) -> nn.Module:
        """A plain (un-parametrised) model carrying the weights to slice."""
        return self.model

    def export(self, verify_export: bool = True) -> Exported:
        setting = self.read_off()
        source = self.weights_for_export(setting)
        slim = export_model(self.space, setting.keep, verify=verify_export, source=source)
        factorized = self._factorize(slim, setting)
        counts, ranks = setting.counts()
        final = cost(self.space, counts, ranks=ranks, per_layer=False)
        metrics = ("flops", "params", "weight_bytes", "bops")
        recipe = dict(getattr(slim, RECIPE_ATTR))
        recipe["ranks"] = factorized
        recipe["method"] = self.name
        recipe["budget"] = self.budget.to_dict()
        setattr(slim, RECIPE_ATTR, recipe)
        return Exported(
            model=slim,
            setting=setting,
            factorized=factorized,
            dense_cost={m: float(getattr(cost(self.space, per_layer=False), m)) for m in metrics},
            cost={m: float(getattr(final, m)) for m in metrics},
            budget={self.metric: self.target},
            recipe=recipe,
        )

    def _factorize(self, slim: nn.Module, setting: Setting) -> dict[str, int]:
        """Factorise the layers whose kept rank lowers their cost; check the result is unchanged."""
        ranks: dict[str, int] = {}
        for weight, kept in setting.ranks.items():
            info = self.space.analysis.params[weight]
            module = slim.get_submodule(info.module_path)
            if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                continue
            w = module.weight
            rest = math.prod(w.shape[1:])
            r = int(kept.numel())
            if pays(w.shape[0], rest, r):
                ranks[info.module_path] = r
        if ranks:
            before = _frozen_copy(slim)
            factorize(slim, ranks)
            if not any(p.device.type == "meta" for p in slim.parameters()):
                verify_outputs(before, slim, self.space.example_inputs, rtol=1e-4)
        return ranks


def _frozen_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)
