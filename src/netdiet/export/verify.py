"""Check that two models compute the same function on random inputs shaped like the example inputs."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from netdiet.errors import VerificationError
from netdiet.graph import ExampleInputs, normalize_inputs
from netdiet.graph.capture import eval_mode


def random_like(inputs: ExampleInputs, seed: int) -> ExampleInputs:
    """Float tensors are redrawn from N(0, 1); integer tensors (token ids) are shuffled copies."""
    gen = torch.Generator().manual_seed(seed)

    def one(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        if isinstance(x, torch.Tensor) and x.numel() > 1 and x.dtype != torch.bool:
            flat = x.flatten()
            return flat[torch.randperm(flat.numel(), generator=gen).to(x.device)].reshape(x.shape)
        return x

    return ExampleInputs(tuple(one(a) for a in inputs.args), {k: one(v) for k, v in inputs.kwargs.items()})


def leaves(out: Any) -> Iterable[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, dict) or hasattr(out, "to_tuple"):
        values = out.to_tuple() if hasattr(out, "to_tuple") else out.values()
        for v in values:
            yield from leaves(v)
    elif isinstance(out, (tuple, list)):
        for v in out:
            yield from leaves(v)


def verify(
    reference: nn.Module,
    candidate: nn.Module,
    example_inputs: Any,
    *,
    rtol: float = 1e-5,
    trials: int = 2,
    double: bool = True,
) -> float:
    """Largest relative difference (max |a - b| / max |b|) over outputs; raises above `rtol`.

    Runs in float64 by default (on copies) so that the check measures structure, not rounding.
    """
    inputs = normalize_inputs(example_inputs)
    ref, cand = reference, candidate
    if double:
        ref, cand = copy.deepcopy(reference).double(), copy.deepcopy(candidate).double()
    worst = 0.0
    for trial in range(trials):
        x = inputs if trial == 0 else random_like(inputs, seed=trial)
        if double:
            x = ExampleInputs(
                tuple(
                    a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in x.args
                ),
                {
                    k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                    for k, v in x.kwargs.items()
                },
            )
        with torch.no_grad(), eval_mode(ref), eval_mode(cand):
            a = list(leaves(ref(*x.args, **x.kwargs)))
            b = list(leaves(cand(*x.args, **x.kwargs)))
        if len(a) != len(b):
            raise VerificationError(f"the models return different numbers of tensors: {len(a)} vs {len(b)}")
        for i, (ta, tb) in enumerate(zip(a, b)):
            if ta.shape != tb.shape:
                raise VerificationError(f"output {i} shapes differ: {tuple(ta.shape)} vs {tuple(tb.shape)}")
            if not ta.is_floating_point():
                if not torch.equal(ta, tb):
                    raise VerificationError(f"integer output {i} differs")
                continue
            scale = float(ta.abs().max()) if ta.numel() else 0.0
            diff = float((ta - tb).abs().max()) if ta.numel() else 0.0
            rel = diff / max(scale, 1e-12)
            worst = max(worst, rel)
            if rel > rtol:
                raise VerificationError(
                    f"exported model differs from the masked reference: output {i} max relative error "
                    f"{rel:.3g} > {rtol:g} (trial {trial}). This is a netdiet bug or a module that hard-codes "
                    "a size netdiet pruned; exclude that module with analyze(..., exclude=(...)) and report it."
                )
    return worst
