"""The Space: every prunable group of a model, its constraints, and the operations over keep-settings.

`mask`, `export` and `cost` are conveniences that call the later stages (imported inside the method,
so this stage never depends on them at import time); the stages themselves never call back here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netdiet.errors import InvalidKeepError
from netdiet.graph import ExampleInputs, GraphAnalysis, ParamInfo, analyze_graph, normalize_inputs
from netdiet.space.groups import Group, Member, build_groups
from netdiet.space.keep import Keep, kept_by_atom, kept_size, positions, validate_keep
from netdiet.space.knobs import Knob, build_knobs
from netdiet.space.units import unit_index


@dataclass
class LayerKnobSite:
    """A conv or linear layer: where later issues attach rank (low-rank) and bit-width knobs."""

    name: str
    op: str
    weight: str


class Space:
    """What can shrink in a model. Built by `netdiet.analyze`; never modifies the model."""

    def __init__(
        self,
        model: nn.Module,
        inputs: ExampleInputs,
        analysis: GraphAnalysis,
        exclude: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.example_inputs = inputs
        self.analysis = analysis
        self.exclude = list(exclude)
        self.groups, self.excluded = build_groups(analysis)
        self._by_name = {g.name: g for g in self.groups}
        self.layers = _layer_sites(analysis)
        self._knobs: list[Knob] | None = None
        self.probe: Any = None  # set by analyze(probe=True): cost of the export probe, groups it froze
        self.frozen_blocks: dict[str, str] = {}  # block path -> why it cannot be dropped

    # ----- knobs ----------------------------------------------------------------------------------
    @property
    def knobs(self) -> list[Knob]:
        """Every knob of the model (keep, rank, weight_bits, act_bits): what methods may choose."""
        if self._knobs is None:
            self._knobs = build_knobs(self)
        return list(self._knobs)

    @property
    def knob_map(self) -> dict[str, Knob]:
        return {k.id: k for k in self.knobs}

    def knobs_of(self, kind: str) -> list[Knob]:
        return [k for k in self.knobs if k.kind == kind]

    # ----- parameters, as the graph saw them ------------------------------------------------------
    def param_info(self, name: str) -> ParamInfo | None:
        """Module path, attribute, shape and dimension layouts of a parameter or buffer."""
        return self.analysis.params.get(name)

    def out_dim(self, weight: str) -> int:
        """The dimension of `weight` that a layer produces (rows of its [out, rest] matrix)."""
        info = self.analysis.params[weight]
        roles = self.analysis.roles
        return next((d for d in range(len(info.dims)) if roles.get((weight, d)) == "out"), 0)

    def reads(self, member: Member) -> bool:
        """Whether the member is an input side of its layer (a unit read there, not produced)."""
        return self.analysis.roles.get((member.param, member.dim)) == "in"

    def member_units(self, member: Member, group: Group) -> torch.Tensor:
        """For each position along the member's dimension, the group unit there (-1: another group)."""
        return unit_index(
            self.analysis.table, self.analysis.params[member.param].dims[member.dim], group.atom
        )

    # ----- groups ---------------------------------------------------------------------------------
    def group(self, name: str) -> Group:
        if name not in self._by_name:
            raise InvalidKeepError(f"unknown group '{name}'; groups are {list(self._by_name)[:10]}...")
        return self._by_name[name]

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for g in self.groups:
            kinds[g.kind] = kinds.get(g.kind, 0) + 1
        return f"Space({type(self.model).__name__}: {len(self.groups)} groups {kinds}, {len(self.excluded)} excluded)"

    # ----- keep-settings --------------------------------------------------------------------------
    def full_keep(self) -> Keep:
        return {g.name: torch.arange(g.size) for g in self.groups}

    def validate(self, keep: Mapping[str, Any]) -> Keep:
        return validate_keep(keep, self.groups, self.excluded)

    def sample(self, ratio: float | None = None, seed: int = 0) -> Keep:
        """A random valid keep-setting: each group keeps ~ratio of its units (random ratio if None)."""
        if ratio is not None and not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        gen = torch.Generator().manual_seed(int(seed))
        keep: Keep = {}
        for g in self.groups:
            r = float(ratio) if ratio is not None else float(torch.empty(1).uniform_(0.1, 1.0, generator=gen))
            n = max(g.min_keep, int(round(g.size * r)))
            if g.multiple_of > 1:
                n = max(g.multiple_of, (n // g.multiple_of) * g.multiple_of)
            n = min(n, g.size)
            keep[g.name] = torch.sort(torch.randperm(g.size, generator=gen)[:n]).values
        return keep

    def counts(self, keep: Mapping[str, Any] | None = None) -> dict[int, Any]:
        """Kept units per atom; values may also be floats or tensors (relaxed counts for surrogates)."""
        if keep is None:
            return {}
        out: dict[int, Any] = {}
        for name, value in keep.items():
            group = self.group(name)
            if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.dim() == 0):
                out[group.atom] = value
            else:
                out[group.atom] = len(value)
        return out

    def dim_size(self, layout: Any, counts: Mapping[int, Any]) -> Any:
        return kept_size(self.analysis.table, layout, counts)

    def kept_positions(self, keep: Keep) -> dict[str, list[torch.Tensor | None]]:
        """For every parameter and buffer: per dim, the kept positions (None where nothing is dropped)."""
        table = self.analysis.table
        kept = kept_by_atom(keep, self.groups)
        out: dict[str, list[torch.Tensor | None]] = {}
        for name, info in self.analysis.params.items():
            dims: list[torch.Tensor | None] = []
            for size, layout in zip(info.shape, info.dims):
                touched = any(a.id in kept for a in table.leaves(layout))
                dims.append(positions(table, layout, kept) if touched else None)
                if dims[-1] is not None and dims[-1].numel() == size:
                    dims[-1] = None
            out[name] = dims
        return out

    def freeze_groups(self, reasons: Mapping[str, str]) -> None:
        """Make groups whole (unprunable) after analysis, each with its reason: the probe uses this for
        sizes the model's code fixes. Group names stay as they were; knobs are rebuilt."""
        from netdiet.graph import Atom

        for name, reason in reasons.items():
            self.analysis.table.freeze(Atom(self.group(name).atom), reason)
        self.groups, self.excluded = build_groups(self.analysis)
        self._by_name = {g.name: g for g in self.groups}
        self._knobs = None

    def freeze_blocks(self, reasons: Mapping[str, str]) -> None:
        """Take the block knobs of these module paths away (kept whole), each with its reason."""
        self.analysis.blocks = [b for b in self.analysis.blocks if b.module_path not in reasons]
        self.frozen_blocks.update(reasons)
        self._knobs = None

    # ----- later stages ---------------------------------------------------------------------------
    def mask(self, keep: Mapping[str, Any]) -> nn.Module:
        from netdiet.export import mask_model

        return mask_model(self, keep)

    def export(self, keep: Mapping[str, Any], *, verify: bool = True) -> nn.Module:
        from netdiet.export import export_model

        return export_model(self, keep, verify=verify)

    def cost(self, keep: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        from netdiet.cost import cost

        return cost(self, keep, **kwargs)


def analyze(
    model: nn.Module, example_inputs: Any, *, exclude: Sequence[Any] = (), probe: bool = True
) -> Space:
    """Trace `model` and find every group of units that can be removed together.

    `example_inputs`: a tensor, a tuple of positional inputs, a dict of keyword inputs, or (args, kwargs).
    `exclude`: module paths (globs allowed), module objects or module types whose dimensions must not
    shrink. `probe`: export each group one step smaller and freeze those the model's code will not run
    with (a size computed from an attribute or a literal), so that every group offered can be exported;
    `space.probe` says what it cost and what it froze. The model is not modified.
    """
    inputs = normalize_inputs(example_inputs)
    analysis = analyze_graph(model, inputs, exclude)
    names = [e if isinstance(e, str) else type(e).__name__ for e in exclude]
    space = Space(model, inputs, analysis, names)
    if probe:
        from netdiet.export.probe import probe_space

        space.probe = probe_space(space)
    return space


def _layer_sites(analysis: GraphAnalysis) -> list[LayerKnobSite]:
    out, seen = [], set()
    for term in analysis.cost_terms:
        if term.weight is not None and term.weight not in seen:
            seen.add(term.weight)
            out.append(LayerKnobSite(term.layer, term.op, term.weight))
    return out
