"""Checks shared by the engine tests: export equivalence, cost == FlopCounterMode, save/load round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import netdiet
from netdiet.export.verify import leaves
from netdiet.graph import normalize_inputs


def n_params(model: nn.Module) -> int:
    """Parameters of a model, each tied tensor once (model.parameters() de-duplicates)."""
    return sum(p.numel() for p in model.parameters())


def rel(a: float, b: float) -> float:
    return abs(float(a) - float(b)) / max(abs(float(b)), 1.0)


def outputs(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
    x = normalize_inputs(inputs)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return [t.detach().clone() for t in leaves(model(*x.args, **x.kwargs))]
    finally:
        for m, f in flags:
            m.training = f


def state_snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool]]:
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
    )


def assert_unchanged(model: nn.Module, snapshot: tuple[dict[str, torch.Tensor], list[bool]]) -> None:
    state, flags = snapshot
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert now[k].shape == v.shape, k
        assert torch.equal(now[k], v), k
    assert [m.training for m in model.modules()] == flags


def check_dense(space: netdiet.Space, model: nn.Module, inputs: Any) -> None:
    """Analytic FLOPs of the dense model == FlopCounterMode; params == sum of numel."""
    report = space.cost()
    measured = netdiet.measured_flops(model, inputs)
    assert measured > 0
    assert rel(report.flops, measured) <= 0.01, (report.flops, measured)
    assert int(report.params) == n_params(model)


def check_keep(
    space: netdiet.Space,
    keep: dict[str, torch.Tensor],
    inputs: Any,
    tmp_path: Path | None = None,
    alt_inputs: Any = None,
) -> nn.Module:
    """Export (verified against mask), check cost on the slim model, alt input sizes and save/load."""
    slim = space.export(keep)  # raises VerificationError unless slim == mask(keep) to 1e-5
    report = space.cost(keep)
    # The slim model is physically smaller: its parameters are what the cost model says.
    assert int(report.params) == n_params(slim)
    measured = netdiet.measured_flops(slim, inputs)
    assert rel(report.flops, measured) <= 0.01, (report.flops, measured)
    if any(len(v) < g.size for g in space.groups for k, v in keep.items() if k == g.name):
        assert report.flops <= space.cost().flops
    if alt_inputs is not None:
        # Module attributes were updated, so the slim model runs at other sizes and still matches the mask.
        netdiet.verify(space.mask(keep), slim, alt_inputs)
    if tmp_path is not None:
        netdiet.save(slim, tmp_path)
        loaded = netdiet.load(tmp_path, space.model)
        for a, b in zip(outputs(slim, inputs), outputs(loaded, inputs), strict=True):
            assert torch.equal(a, b)
    return slim


def keep_settings(space: netdiet.Space, n: int = 2) -> list[dict[str, torch.Tensor]]:
    """n random valid keep-settings plus an extreme one (the fewest units every group allows)."""
    out = [space.sample(seed=s) for s in range(n)]
    out.append({g.name: torch.arange(g.size - max(g.min_keep, g.multiple_of), g.size) for g in space.groups})
    return out
