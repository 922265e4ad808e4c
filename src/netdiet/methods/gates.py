"""Learnable non-negative gates on a model's groups and on the singular values of its layers.

A unit's gate scales every weight column that *reads* the unit (the "in" side of conv/linear layers), so
a zero gate makes the unit invisible to the rest of the network and the unit can be removed exactly.
Singular-value gates come from W = U diag(b) V^T (U, V from the SVD, scaled by sqrt(S), b = 1 at the
start, so the model is unchanged when the gates are attached).

Gates live in a `GateSet` that is *not* a submodule of the model: the model's own optimizer trains the
weights (including U and V); the compressor trains the gates with its own optimizer and projects them
back onto a >= 0 after each step.

Block gates (depth): one scalar g per droppable residual block, in [0, 1]; the block's output becomes
lerp(stream input, output, g), so g = 1 is the block and g = 0 the identity it is exported as when dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netdiet.graph import ParamInfo
from netdiet.space import Space


class GateSet(nn.Module):
    """One gate vector per group, one per factorised layer and one scalar (a vector of one) per gated
    block, all initialised to 1. `parameters()` yields groups, then ranks, then blocks."""

    def __init__(
        self, group_sizes: dict[str, int], rank_sizes: dict[str, int], block_paths: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.group_names = list(group_sizes)
        self.rank_names = list(rank_sizes)
        self.block_names = list(block_paths)
        self.groups = nn.ParameterList([nn.Parameter(torch.ones(n)) for n in group_sizes.values()])
        self.ranks = nn.ParameterList([nn.Parameter(torch.ones(n)) for n in rank_sizes.values()])
        self.blocks = nn.ParameterList([nn.Parameter(torch.ones(1)) for _ in self.block_names])

    def group(self, name: str) -> torch.Tensor:
        return self.groups[self.group_names.index(name)]

    def rank(self, weight: str) -> torch.Tensor:
        return self.ranks[self.rank_names.index(weight)]

    def block(self, path: str) -> torch.Tensor:
        return self.blocks[self.block_names.index(path)]

    @torch.no_grad()
    def project(self) -> None:
        """Keep gates non-negative (projected gradient), block gates in [0, 1] (a block is at most whole)."""
        for p in self.parameters():
            p.clamp_(min=0.0)
        for p in self.blocks:
            p.clamp_(max=1.0)


@dataclass
class _Scale:
    dim: int
    gate: int
    index: torch.Tensor  # position -> unit, -1 where the group is absent


class UnitScale(nn.Module):
    """Parametrization W -> W * gate[unit(position)] along each gated dimension."""

    def __init__(self, gates: GateSet, scales: list[_Scale]) -> None:
        super().__init__()
        object.__setattr__(self, "_gates", gates)  # a reference, not a submodule
        self._gates: GateSet
        self.scales = scales

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        for s in self.scales:
            g = self._gates.groups[s.gate].to(weight.device)  # gates may live on CPU; grads flow back
            idx = s.index.to(weight.device)
            factor = torch.where(idx >= 0, g[idx.clamp(min=0)], torch.ones((), device=weight.device))
            shape = [1] * weight.dim()
            shape[s.dim] = -1
            weight = weight * factor.view(shape)
        return weight


class LowRank(nn.Module):
    """Parametrization (U, V) -> W = U diag(b) V^T, with W's `out_dim` as the row dimension."""

    def __init__(self, gates: GateSet, rank_index: int, shape: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        object.__setattr__(self, "_gates", gates)
        self._gates: GateSet
        self.rank_index = rank_index
        self.shape = tuple(shape)
        self.out_dim = out_dim

    def _moved_shape(self) -> list[int]:
        order = [self.out_dim] + [d for d in range(len(self.shape)) if d != self.out_dim]
        return [self.shape[d] for d in order]

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b = self._gates.ranks[self.rank_index].to(u.device)
        w2d = (u * b) @ v
        moved = w2d.reshape(self._moved_shape())
        return moved.movedim(0, self.out_dim)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w2d = weight.movedim(self.out_dim, 0).reshape(weight.shape[self.out_dim], -1)
        u, s, vh = torch.linalg.svd(w2d.float(), full_matrices=False)
        root = s.sqrt()
        return (u * root).to(weight.dtype), (root[:, None] * vh).to(weight.dtype)


def attach_gates(space: Space, model: nn.Module, lowrank: bool = True, blocks: Sequence[str] = ()) -> GateSet:
    """Register gate parametrizations on `model` (which must have the analysed model's structure): one
    gate per unit of every keep knob, with `lowrank` one per singular direction of every rank knob, and
    one forward hook per block path in `blocks` (module paths of the space's block knobs)."""
    rank_sizes = {k.site: k.dense for k in space.knobs_of("rank")} if lowrank else {}
    gates = GateSet({g.name: g.size for g in space.groups}, rank_sizes, blocks)
    for bi, path in enumerate(gates.block_names):
        model.get_submodule(path).register_forward_hook(_BlockGate(gates, bi), with_kwargs=True)
    scales: dict[str, list[_Scale]] = {}
    for gi, group in enumerate(space.groups):
        for member in group.members:
            if space.reads(member):
                idx = space.member_units(member, group)
                scales.setdefault(member.param, []).append(_Scale(member.dim, gi, idx))
    for ri, weight in enumerate(rank_sizes):
        info = _info(space, weight)
        module = model.get_submodule(info.module_path) if info.module_path else model
        parametrize.register_parametrization(
            module, info.attr, LowRank(gates, ri, info.shape, space.out_dim(weight)), unsafe=True
        )
    for weight, entries in scales.items():
        info = _info(space, weight)
        module = model.get_submodule(info.module_path) if info.module_path else model
        parametrize.register_parametrization(module, info.attr, UnitScale(gates, entries), unsafe=True)
    return gates


class _BlockGate:
    """Forward hook: the block's stream output moved toward its stream input (the first tensor argument,
    as the exported `DroppedBlock` returns it) by 1 - g. `torch.lerp` returns the output exactly at g = 1,
    so attaching the gates leaves the model unchanged."""

    def __init__(self, gates: GateSet, index: int) -> None:
        self.gates = gates
        self.index = index

    def __call__(self, _m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
        stream = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        head = out if isinstance(out, torch.Tensor) else out[0]
        if stream is None or stream.shape != head.shape:
            raise RuntimeError(
                f"gated block '{self.gates.block_names[self.index]}' was called without its stream input "
                "as its first tensor argument; it cannot be gated (leave depth off)"
            )
        g = self.gates.blocks[self.index].to(device=head.device, dtype=head.dtype)
        gated = torch.lerp(stream, head, g)
        return gated if isinstance(out, torch.Tensor) else (gated, *out[1:])


def _info(space: Space, name: str) -> ParamInfo:
    info = space.param_info(name)
    if info is None:
        raise KeyError(f"'{name}' is not a parameter of the analysed model")
    return info
