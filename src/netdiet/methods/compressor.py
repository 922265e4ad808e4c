"""`Compressor`: compression inside the user's own training loop.

    comp = netdiet.Compressor(model, example_inputs, budget=Budget(flops=0.5), method="l1l2")
    opt = torch.optim.SGD(comp.model.parameters(), lr=0.05)     # train comp.model, a copy
    for x, y in loader:
        loss = F.cross_entropy(comp.model(x), y) + comp.penalty()
        opt.zero_grad(); loss.backward(); opt.step(); comp.step()
    result = comp.export()                                      # slim model under the budget

The user's model is copied, never modified; the loop, optimizer and schedule stay the user's. The gates
are not in `comp.model.parameters()`: the compressor trains them itself in `step()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.methods.base import Exported, Method
from netdiet.methods.baselines import Magnitude, Uniform
from netdiet.methods.budget import Budget
from netdiet.methods.l1l2 import L1L2, L1L2Config
from netdiet.space import Space, analyze

METHODS: dict[str, type[Method]] = {"l1l2": L1L2, "magnitude": Magnitude, "uniform": Uniform}


def make_method(name: str, model: nn.Module, space: Space, budget: Budget, **config: Any) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; available: {', '.join(METHODS)}")
    if name == "l1l2":
        return L1L2(model, space, budget, L1L2Config(**config))
    if config:
        raise ConfigError(f"method '{name}' takes no options, got {sorted(config)}")
    return METHODS[name](model, space, budget)


class Compressor:
    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        budget: Budget | str,
        method: str = "l1l2",
        *,
        exclude: Sequence[Any] = (),
        **config: Any,
    ) -> None:
        if isinstance(budget, str):
            budget = Budget.parse(budget)
        if not isinstance(budget, Budget):
            raise ConfigError(f"budget must be a netdiet.Budget or a string like 'flops=0.5', got {budget!r}")
        self.budget = budget
        self.space = analyze(model, example_inputs, exclude=exclude)
        self.method = make_method(method, model, self.space, budget, **config)

    @property
    def model(self) -> nn.Module:
        """The model to train (a gated copy for l1l2; the model itself for one-shot baselines)."""
        return self.method.model

    def penalty(self) -> torch.Tensor:
        """Add to the task loss before backward()."""
        return self.method.penalty()

    def step(self) -> None:
        """Call right after the user's optimizer.step()."""
        self.method.step()

    def status(self) -> dict[str, float]:
        out = {"target": self.method.target, "dense": self.method.dense}
        if isinstance(self.method, L1L2):
            out.update(surrogate=self.method.last_surrogate, lam=self.method.lam)
        return out

    def export(self, verify: bool = True) -> Exported:
        """Read off a setting within the budget and return the slim, verified model."""
        return self.method.export(verify_export=verify)
