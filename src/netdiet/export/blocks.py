"""Dropping residual blocks: the module is replaced by one that returns its stream input.

The graph stage only offers blocks whose output has the stream's shape and layout and whose input skips
around them, so the identity leaves the rest of the model as it was; the drop handler checks the result
against the masked model with the same blocks dropped. The block's Python return value is mirrored (a
tensor, or a tuple whose first item is the stream and whose other items were None or inputs it passed
on unchanged), found by running the model once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.graph import normalize_inputs
from netdiet.graph.capture import eval_mode

Source = list[Any] | None  # None, ["arg", i] or ["kw", name]: where a returned extra comes from


class DroppedBlock(nn.Module):
    """Identity on the stream: the first tensor argument, returned as the original block returned it.

    `returns`: 0 if the block returned a tensor, else one entry per item of the tuple it returned after
    the stream: None, or the input it passed through unchanged (`["arg", i]`, `["kw", name]`), as a T5
    layer passes on the position bias it was given."""

    def __init__(self, returns: int | list[Source] = 0) -> None:
        super().__init__()
        if isinstance(returns, int):  # n > 0: a tuple of n whose extras were None; 0: a tensor
            self.is_tuple = returns > 0
            self.returns: list[Source] = [None] * max(0, returns - 1)
        else:
            self.is_tuple = True
            self.returns = list(returns)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        stream = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if stream is None:
            raise RuntimeError("a dropped block was called without a tensor input")
        if not self.is_tuple:
            return stream
        extras: list[Any] = []
        for source in self.returns:
            if source is None:
                extras.append(None)
            elif source[0] == "arg":
                extras.append(args[int(source[1])] if int(source[1]) < len(args) else None)
            else:
                extras.append(kwargs.get(str(source[1])))
        return (stream, *extras)

    def extra_repr(self) -> str:
        return "dropped block (identity)"


def return_shapes(model: nn.Module, paths: Sequence[str], example_inputs: Any) -> dict[str, Any]:
    """For each block path, 0 if it returns a tensor, else what each item after the stream in the tuple
    it returns is: None, or an input passed through. A block that returns anything else cannot drop."""
    out: dict[str, Any] = {}
    handles = []

    def hook(path: str) -> Any:
        def record(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
            if isinstance(result, torch.Tensor):
                out[path] = 0
                return
            if not (isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor)):
                raise ConfigError(f"block '{path}' returns {type(result).__name__}; it cannot be dropped")
            sources: list[Source] = []
            for item in result[1:]:
                if item is None:
                    sources.append(None)
                    continue
                arg = next((i for i, a in enumerate(args) if a is item), None)
                kw = next((k for k, v in kwargs.items() if v is item), None)
                if arg is None and kw is None:
                    raise ConfigError(
                        f"block '{path}' returns more than its stream ({len(result)} values, one computed "
                        "inside it); it cannot be dropped: keep it (block knob 1)"
                    )
                sources.append(["arg", arg] if arg is not None else ["kw", kw])
            out[path] = sources

        return record

    for path in paths:
        handles.append(model.get_submodule(path).register_forward_hook(hook(path), with_kwargs=True))
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


def drop_blocks(model: nn.Module, shapes: dict[str, Any]) -> nn.Module:
    """Replace each block (path -> what it returns, from `return_shapes`) of `model` in place."""
    done: list[str] = []
    for path, returns in sorted(shapes.items()):
        if any(path.startswith(outer + ".") for outer in done):
            continue  # inside a block dropped whole already
        done.append(path)
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, DroppedBlock(returns))
    return model
