"""Which unit of a group each position of a dimension belongs to.

Methods that gate units (a scale per channel, head or neuron) need, for every parameter dimension a group
appears in, the map position -> unit index; positions outside the group (other segments of a concat) map
to -1. Derived from the same layouts the exporter slices with, so gating and export always agree.
"""

from __future__ import annotations

import torch

from netdiet.graph import Atom, AtomTable, Cat, Layout, Prod


def unit_index(table: AtomTable, layout: Layout, atom: int) -> torch.Tensor:
    """LongTensor[size(layout)]: the unit of `atom` at each position, or -1 where `atom` is absent."""
    layout = table.resolve(layout)
    if isinstance(layout, Atom):
        n = table.atom_size(layout)
        return torch.arange(n) if layout.id == atom else torch.full((n,), -1, dtype=torch.long)
    if isinstance(layout, Prod):
        out = torch.full((1,), -1, dtype=torch.long)
        for part in layout.parts:
            sub = unit_index(table, part, atom)
            # at most one factor holds `atom`; positions take that factor's unit
            out = torch.where(sub[None, :] >= 0, sub[None, :], out[:, None]).flatten()
        return out
    assert isinstance(layout, Cat)
    return torch.cat([unit_index(table, part, atom) for part in layout.parts])
