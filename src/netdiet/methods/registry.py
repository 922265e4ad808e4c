"""The registry of compression methods: a new method is one file plus one line here."""

from __future__ import annotations

import dataclasses
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
CONFIGS: dict[str, type] = {"l1l2": L1L2Config}


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
    config_cls = CONFIGS.get(name)
    if config_cls is None:
        if config:
            raise ConfigError(f"method '{name}' takes no options, got {sorted(config)}")
        return METHODS[name](model, space, budget, latency)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"method '{name}' has no option(s) {unknown}; its options are {sorted(known)}")
    method_cls: Any = METHODS[name]  # configurable methods take (model, space, budget, config, latency=)
    return method_cls(model, space, budget, config_cls(**config), latency=latency)
