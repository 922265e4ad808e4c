"""Dropping residual blocks: the module is replaced by one that returns its stream input.

The graph stage only offers blocks whose output has the stream's shape and layout and whose input skips
around them, so the identity leaves the rest of the model as it was; the drop handler checks the result
against the masked model with the same blocks dropped. The block's Python return value is mirrored (a
tensor, or a tuple whose first item is the stream and whose other items were None), found by running the
model once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.graph import normalize_inputs
from netdiet.graph.capture import eval_mode


class DroppedBlock(nn.Module):
    """Identity on the stream: the first tensor argument, returned as the original block returned it."""

    def __init__(self, tuple_len: int = 0) -> None:
        super().__init__()
        self.tuple_len = int(tuple_len)  # 0: the block returned a tensor

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        stream = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if stream is None:
            raise RuntimeError("a dropped block was called without a tensor input")
        if self.tuple_len:
            return (stream, *([None] * (self.tuple_len - 1)))
        return stream

    def extra_repr(self) -> str:
        return "dropped block (identity)"


def return_shapes(model: nn.Module, paths: Sequence[str], example_inputs: Any) -> dict[str, int]:
    """For each block path, 0 if it returns a tensor, else the length of the tuple it returns."""
    out: dict[str, int] = {}
    handles = []

    def hook(path: str) -> Any:
        def record(_m: nn.Module, _inp: Any, result: Any) -> None:
            if isinstance(result, torch.Tensor):
                out[path] = 0
            elif isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor):
                if any(r is not None for r in result[1:]):
                    raise ConfigError(
                        f"block '{path}' returns more than its stream ({len(result)} values); it cannot be "
                        "dropped: keep it (block knob 1)"
                    )
                out[path] = len(result)
            else:
                raise ConfigError(f"block '{path}' returns {type(result).__name__}; it cannot be dropped")

        return record

    for path in paths:
        handles.append(model.get_submodule(path).register_forward_hook(hook(path)))
    inputs = normalize_inputs(example_inputs)
    try:
        with torch.no_grad(), eval_mode(model):
            model(*inputs.args, **inputs.kwargs)
    finally:
        for h in handles:
            h.remove()
    missing = [p for p in paths if p not in out]
    if missing:
        raise ConfigError(f"blocks {missing} did not run on the example inputs; they cannot be dropped")
    return out


def drop_blocks(model: nn.Module, shapes: dict[str, int]) -> nn.Module:
    """Replace each block (path -> return shape) of `model` in place by a DroppedBlock."""
    for path, tuple_len in shapes.items():
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, DroppedBlock(tuple_len))
    return model
