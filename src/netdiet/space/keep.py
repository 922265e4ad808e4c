"""Keep-settings: validation and the expansion of kept units into kept positions of each dimension."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch

from netdiet.errors import InvalidKeepError
from netdiet.graph import Atom, AtomTable, Cat, Layout, Prod
from netdiet.space.groups import ExcludedGroup, Group

Keep = dict[str, torch.Tensor]


def to_index(value: Any, group: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu")
    else:
        try:
            t = torch.as_tensor(list(value) if not hasattr(value, "__array__") else value)
        except Exception as exc:
            raise InvalidKeepError(
                f"keep['{group}'] must be a sequence of unit indices, got {type(value).__name__}"
            ) from exc
    if t.dtype == torch.bool:
        t = torch.nonzero(t).flatten()
    if t.numel() == 0 and t.dim() == 1:
        t = t.long()  # [] parses as float32; "keep nothing" must reach the min_keep check
    if t.dtype.is_floating_point or t.dim() != 1:
        raise InvalidKeepError(
            f"keep['{group}'] must be a 1-D list of integer unit indices, got {t.dtype} {tuple(t.shape)}"
        )
    return t.long()


def validate_keep(keep: Mapping[str, Any], groups: list[Group], excluded: list[ExcludedGroup]) -> Keep:
    """Check a keep-setting against every constraint; return sorted index tensors for every group."""
    if not isinstance(keep, Mapping):
        raise InvalidKeepError(
            f"a keep-setting is a dict group name -> indices to keep, got {type(keep).__name__}"
        )
    by_name = {g.name: g for g in groups}
    excluded_by_name = {e.name: e for e in excluded}
    out: Keep = {}
    for name, value in keep.items():
        if name in excluded_by_name:
            ex = excluded_by_name[name]
            idx = to_index(value, name)
            if idx.numel() == ex.size and torch.equal(torch.sort(idx).values, torch.arange(ex.size)):
                continue
            raise InvalidKeepError(
                f"group '{name}' cannot shrink: {'; '.join(ex.reasons) or 'excluded'}. Keep all {ex.size} units "
                "or leave it out of the keep-setting."
            )
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f" Did you mean {close}?" if close else f" Valid groups: {list(by_name)[:8]}..."
            raise InvalidKeepError(f"unknown group '{name}'.{hint}")
        group = by_name[name]
        idx = to_index(value, name)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= group.size):
            raise InvalidKeepError(
                f"keep['{name}'] has index {int(idx.max()) if int(idx.max()) >= group.size else int(idx.min())} "
                f"outside 0..{group.size - 1}"
            )
        uniq = torch.unique(idx)
        if uniq.numel() != idx.numel():
            raise InvalidKeepError(f"keep['{name}'] lists some units twice")
        if uniq.numel() < group.min_keep:
            raise InvalidKeepError(
                f"group '{name}' ({group.kind}, {group.size} units) would keep {uniq.numel()} units; "
                f"keep at least {group.min_keep}"
            )
        if uniq.numel() % group.multiple_of != 0 and uniq.numel() != group.size:
            raise InvalidKeepError(
                f"group '{name}' must keep a multiple of {group.multiple_of} units, got {uniq.numel()}"
            )
        out[name] = uniq  # torch.unique sorts
    for group in groups:
        out.setdefault(group.name, torch.arange(group.size))
    return out


def kept_by_atom(keep: Keep, groups: list[Group]) -> dict[int, torch.Tensor]:
    return {g.atom: keep[g.name] for g in groups if keep[g.name].numel() != g.size}


def positions(table: AtomTable, layout: Layout, kept: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Indices (into the full dimension) that survive when each atom keeps `kept[atom]` units."""
    layout = table.resolve(layout)
    if isinstance(layout, Atom):
        idx = kept.get(layout.id)
        return idx if idx is not None else torch.arange(table.atom_size(layout))
    if isinstance(layout, Prod):
        pos = torch.zeros(1, dtype=torch.long)
        for part in layout.parts:
            size = table.size(part)
            sub = positions(table, part, kept)
            pos = (pos[:, None] * size + sub[None, :]).flatten()
        return pos
    assert isinstance(layout, Cat)
    chunks, offset = [], 0
    for part in layout.parts:
        chunks.append(positions(table, part, kept) + offset)
        offset += table.size(part)
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)


def kept_size(table: AtomTable, layout: Layout, counts: Mapping[int, Any]) -> Any:
    """Size of a dimension when atoms keep `counts[atom]` units; counts may be ints, floats or tensors."""
    layout = table.resolve(layout)
    if isinstance(layout, Atom):
        return counts.get(layout.id, table.atom_size(layout))
    if isinstance(layout, Prod):
        out: Any = 1
        for part in layout.parts:
            out = out * kept_size(table, part, counts)
        return out
    total: Any = 0
    for part in layout.parts:
        total = total + kept_size(table, part, counts)
    return total
