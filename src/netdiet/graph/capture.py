"""Capture a model's graph with torch.export without touching the user's model.

torch.export (non-strict) is the only tracer that captures both torchvision CNNs and transformers 5.x
models on current torch; torch.fx fails on the latter. Models whose weights live on the meta device are
captured without allocating weights, which is how a 7B-parameter graph fits in a laptop's memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netdiet.errors import TraceError


@dataclass(frozen=True)
class ExampleInputs:
    """Positional and keyword example inputs, normalised from what the user passed."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def normalize_inputs(example_inputs: Any) -> ExampleInputs:
    """Accept a tensor, a tuple/list of positional inputs, a dict of keyword inputs, or (args, kwargs)."""
    if isinstance(example_inputs, ExampleInputs):
        return example_inputs
    if isinstance(example_inputs, torch.Tensor):
        return ExampleInputs((example_inputs,), {})
    if isinstance(example_inputs, Mapping):
        return ExampleInputs((), dict(example_inputs))
    if isinstance(example_inputs, (tuple, list)):
        items = tuple(example_inputs)
        if len(items) == 2 and isinstance(items[0], (tuple, list)) and isinstance(items[1], Mapping):
            return ExampleInputs(tuple(items[0]), dict(items[1]))
        return ExampleInputs(items, {})
    raise TraceError(
        f"example_inputs must be a tensor, a tuple of positional inputs, a dict of keyword inputs or "
        f"(args, kwargs); got {type(example_inputs).__name__}"
    )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Trace in eval mode (dropout off, BN running stats) and restore every module's own flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def capture(model: nn.Module, inputs: ExampleInputs) -> torch.export.ExportedProgram:
    """Run torch.export in non-strict mode; turn its many failure modes into one actionable error."""
    if not isinstance(model, nn.Module):
        raise TraceError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        with eval_mode(model), torch.no_grad():
            return torch.export.export(model, inputs.args, inputs.kwargs, strict=False)
    except Exception as exc:  # torch.export raises many unrelated types
        shapes = _describe(inputs)
        raise TraceError(
            f"torch.export could not capture {type(model).__name__} with example inputs {shapes}: "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}. "
            "Check that the example inputs are what the model's forward() expects (same number, dtype "
            "and rank), and that forward() has no data-dependent Python control flow."
        ) from exc


def _describe(inputs: ExampleInputs) -> str:
    def one(x: Any) -> str:
        if isinstance(x, torch.Tensor):
            return f"Tensor{tuple(x.shape)}:{str(x.dtype).replace('torch.', '')}"
        return type(x).__name__

    parts = [one(a) for a in inputs.args] + [f"{k}={one(v)}" for k, v in inputs.kwargs.items()]
    return "(" + ", ".join(parts) + ")"
