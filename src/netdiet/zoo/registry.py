"""The zoo registry: name -> (config class, builder, input kind, classes).

Kept separate from the model files so later code (trainer, CLI, benchmarks) can look up what inputs a
model takes without importing every family, and so a new family is one file plus one `register` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

InputKind = Literal["image", "tokens"]


@dataclass(frozen=True)
class ZooEntry:
    """One buildable model: its config dataclass, its builder and what inputs it expects."""

    name: str
    config_cls: type
    builder: Callable[[Any], nn.Module]
    input_kind: InputKind
    num_classes: int
    description: str = ""

    def __post_init__(self) -> None:
        if self.input_kind not in ("image", "tokens"):
            raise ValueError(f"ZooEntry.input_kind must be 'image' or 'tokens', got {self.input_kind!r}")
        if not dataclasses.is_dataclass(self.config_cls):
            raise ValueError(f"ZooEntry.config_cls for {self.name!r} must be a dataclass")


_REGISTRY: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> None:
    """Add a model family; names are unique so a typo cannot silently shadow another model."""
    if entry.name in _REGISTRY:
        raise ValueError(f"zoo model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def entry(name: str) -> ZooEntry:
    """The registry entry for `name`; ValueError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown zoo model {name!r}; valid names: {', '.join(names())}") from None


def config_of(name: str) -> type:
    """The config dataclass of a model, e.g. to list its fields for a CLI."""
    return entry(name).config_cls


def make_config(name: str, **overrides: Any) -> Any:
    """Instantiate the model's config with overrides; unknown fields give a ValueError listing valid ones."""
    cls = config_of(name)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown config field(s) {', '.join(unknown)} for zoo model {name!r}; valid fields: {', '.join(valid)}"
        )
    return cls(**overrides)


def build(name: str, **overrides: Any) -> nn.Module:
    """Build a fresh model; `overrides` go into its dataclass config (e.g. `build("vit", depth=2)`)."""
    return entry(name).builder(make_config(name, **overrides))


def example_inputs(name: str, batch_size: int = 2, **overrides: Any) -> tuple[torch.Tensor, ...]:
    """Positional inputs for `name` that torch.export can trace (random; shapes follow the config)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    e = entry(name)
    cfg = make_config(name, **overrides)
    gen = torch.Generator().manual_seed(0)
    if e.input_kind == "image":
        size = getattr(cfg, "image_size", 32)
        channels = getattr(cfg, "in_channels", 3)
        return (torch.randn(batch_size, channels, size, size, generator=gen),)
    seq = min(16, cfg.max_len)
    ids = torch.randint(0, cfg.vocab_size, (batch_size, seq), generator=gen)
    mask = torch.ones(batch_size, seq, dtype=torch.long)
    mask[0, seq // 2 :] = 0  # one padded row so the masking path is part of the trace
    return (ids, mask)
