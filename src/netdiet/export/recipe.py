"""Recipes: the JSON that, with the base model definition, rebuilds an exported model. Never pickled."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from netdiet.errors import RecipeError
from netdiet.graph import ExampleInputs


def fingerprint(model: nn.Module) -> str:
    """Hash of parameter names and shapes: detects loading a recipe onto the wrong base model."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)};".encode())
    return h.hexdigest()[:16]


def _describe(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return {"__tensor__": True, "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (tuple, list)):
        return [_describe(v) for v in x]
    raise RecipeError(f"example input of type {type(x).__name__} cannot be recorded in a recipe")


def describe_inputs(inputs: ExampleInputs) -> dict[str, Any]:
    return {
        "args": [_describe(a) for a in inputs.args],
        "kwargs": {k: _describe(v) for k, v in inputs.kwargs.items()},
    }


def _build(x: Any, device: torch.device) -> Any:
    if isinstance(x, dict) and x.get("__tensor__"):
        dtype = getattr(torch, str(x["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise RecipeError(f"recipe names an unknown dtype '{x['dtype']}'")
        return torch.zeros([int(s) for s in x["shape"]], dtype=dtype, device=device)
    if isinstance(x, list):
        return tuple(_build(v, device) for v in x)
    return x


def build_inputs(desc: dict[str, Any], device: torch.device) -> ExampleInputs:
    try:
        args = tuple(_build(a, device) for a in desc["args"])
        kwargs = {k: _build(v, device) for k, v in desc["kwargs"].items()}
    except (KeyError, TypeError) as exc:
        raise RecipeError(f"recipe 'example_inputs' is malformed: {exc}") from exc
    return ExampleInputs(args, kwargs)
