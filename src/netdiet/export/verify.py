"""Check that two models compute the same function on random inputs shaped like the example inputs."""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

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

    Runs in float64 by default (on copies) so that the check measures structure, not rounding. A model
    whose reference cannot run in float64 (fake-quant ops insist on float32 scales) is compared in
    float32 instead, at a tolerance of at least 1e-4. A candidate that fails to run at all is a
    VerificationError too: typically a size hard-coded in forward() that netdiet pruned.
    """
    if double:
        try:
            return _verify(reference, candidate, example_inputs, rtol=rtol, trials=trials, double=True)
        except _ReferenceFailed:
            pass
        rtol = max(rtol, 1e-4)
    try:
        return _verify(reference, candidate, example_inputs, rtol=rtol, trials=trials, double=False)
    except _ReferenceFailed as exc:
        raise exc.__cause__ from None  # type: ignore[misc]


class _ReferenceFailed(Exception):
    """The reference model itself raised (so there is nothing to compare against at this precision)."""


def _verify(
    reference: nn.Module,
    candidate: nn.Module,
    example_inputs: Any,
    *,
    rtol: float,
    trials: int,
    double: bool,
) -> float:
    inputs = normalize_inputs(example_inputs)
    ref, cand = reference, candidate
    if double:
        ref, cand = copy.deepcopy(reference).double(), copy.deepcopy(candidate).double()
        _fast_grouped_convs(ref)
        _fast_grouped_convs(cand)
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
            try:
                a = list(leaves(ref(*x.args, **x.kwargs)))
            except Exception as exc:
                raise _ReferenceFailed() from exc
            try:
                b = list(leaves(cand(*x.args, **x.kwargs)))
            except Exception as exc:
                raise VerificationError(
                    f"the exported model fails to run where the masked reference runs: {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}. A module probably "
                    "hard-codes a size netdiet pruned (a literal in view/reshape/split); exclude that module "
                    "with analyze(..., exclude=(...)) or derive the size from the tensor's shape."
                ) from exc
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


def _grouped_conv2d(
    module: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """conv2d with groups as unfold + batched matmul: the same sums, but fast in float64.

    CPU float64 depthwise/grouped convolution has no optimised kernel (40x slower than a dense conv
    of the same size), which made verifying a MobileNet take minutes.
    """
    groups = module.groups
    out_ch, per_group, kh, kw = weight.shape
    stride, padding, dilation = module.stride, module.padding, module.dilation
    assert isinstance(padding, tuple)
    batch, _, h, w = x.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = cols.view(batch, groups, per_group * kh * kw, ho * wo)
    kernel = weight.reshape(groups, out_ch // groups, per_group * kh * kw)
    out = torch.einsum("bgkl,gok->bgol", cols, kernel).reshape(batch, out_ch, ho, wo)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _fast_grouped_convs(model: nn.Module) -> None:
    """On a float64 copy, route batched zero-padded grouped Conv2d through `_grouped_conv2d`."""
    for module in model.modules():
        if (
            type(module) is nn.Conv2d
            and module.groups > 1
            and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple)
        ):
            original = module._conv_forward

            def forward(
                self: nn.Conv2d,
                x: torch.Tensor,
                weight: torch.Tensor,
                bias: torch.Tensor | None,
                _original: object = original,
            ) -> torch.Tensor:
                if x.dim() != 4:
                    return _original(x, weight, bias)  # type: ignore[operator]
                return _grouped_conv2d(self, x, weight, bias)

            module._conv_forward = types.MethodType(forward, module)  # type: ignore[method-assign]
