"""The registry of compression methods: a new method is one file plus one line here."""

from __future__ import annotations

from typing import Any

from torch import nn

from netdiet.cost.latency import LatencyModel
from netdiet.errors import ConfigError
from netdiet.methods.base import Method
from netdiet.methods.baselines import Magnitude, Uniform
from netdiet.methods.budget import Budget
from netdiet.methods.l1l2 import L1L2, L1L2Config
from netdiet.space import Space

METHODS: dict[str, type[Method]] = {"l1l2": L1L2, "magnitude": Magnitude, "uniform": Uniform}


def make_method(
    name: str,
    model: nn.Module,
    space: Space,
    budget: Budget,
    *,
    latency: LatencyModel | None = None,
    **config: Any,
) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; available: {', '.join(METHODS)}")
    if name == "l1l2":
        return L1L2(model, space, budget, L1L2Config(**config), latency=latency)
    if config:
        raise ConfigError(f"method '{name}' takes no options, got {sorted(config)}")
    return METHODS[name](model, space, budget, latency)
