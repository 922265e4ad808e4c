"""The registry of compression methods. A new method is one file in this package: a `Method` subclass
decorated with `@register_method("name")`, with its options as a dataclass `Config`. The package imports
every module in it once (`discover`), so nothing else has to name the method."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from netdiet.cost.latency import LatencyModel
from netdiet.errors import ConfigError
from netdiet.methods.base import Method
from netdiet.methods.budget import Budget
from netdiet.methods.context import Evaluator, MethodContext
from netdiet.space import Assignment, Space

METHODS: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make a Method available to compress(), Compressor, the CLI and benchmarks."""

    def add(cls: M) -> M:
        if not dataclasses.is_dataclass(cls.Config):
            raise TypeError(f"method '{name}': Config must be a dataclass, got {cls.Config!r}")
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"a method named '{name}' is already registered ({METHODS[name].__qualname__})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return add


def discover() -> None:
    """Import every module of this package, so each method file registers itself."""
    import netdiet.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


def options_of(name: str) -> list[str]:
    """The option names a method's config takes."""
    return [f.name for f in dataclasses.fields(method_class(name).Config)]


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def make_method(
    name: str,
    model: nn.Module,
    space: Space,
    budget: Budget,
    *,
    latency: LatencyModel | None = None,
    evaluator: Evaluator | None = None,
    fixed: Assignment | None = None,
    multiples: dict[str, int] | None = None,
    **options: Any,
) -> Method:
    """Build method `name` on `space` for `budget`; `options` are fields of its Config. `fixed`: knobs
    the caller sets for every candidate (bit widths), priced with them and merged into the read-off.
    `multiples`: group name -> channel multiple the read-off keeps (default: the latency table's)."""
    cls = method_class(name)
    known = options_of(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = f"its options are {sorted(known)}" if known else "it takes no options"
        raise ConfigError(f"method '{name}' has no option(s) {unknown}; {takes}")
    context = MethodContext(
        space,
        budget,
        latency=latency,
        evaluator=evaluator,
        fixed=fixed or Assignment(),
        multiples=dict(multiples or {}),
    )
    return cls(model, context, cls.Config(**options))
