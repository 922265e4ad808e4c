"""The layout algebra: unification, refinement of atoms into products and concats, conflicts, freezing."""

from __future__ import annotations

import pytest

from netdiet.graph.layout import Atom, AtomTable, Cat, LayoutConflict, Prod


def test_union_shares_size_and_freeze_reasons() -> None:
    t = AtomTable()
    a, b = t.new(8), t.new(8, frozen="model output")
    t.unify(a, b)
    assert t.find(a.id) == t.find(b.id)
    assert t.is_frozen(a) and t.frozen_reasons(a) == ["model output"]
    with pytest.raises(LayoutConflict, match="sizes differ"):
        t.unify(a, t.new(4))


def test_atom_unified_with_product_is_refined_for_every_holder() -> None:
    t = AtomTable()
    hidden = t.new(12)
    other = t.new(12)
    t.unify(hidden, other)
    heads, dim = t.new(3), t.new(4)
    t.unify(hidden, Prod((heads, dim)))
    assert t.resolve(other) == Prod((heads, dim))
    assert [t.atom_size(a) for a in t.leaves(other)] == [3, 4]


def test_products_align_by_splitting_the_larger_factor() -> None:
    t = AtomTable()
    x = t.new(24)
    a, b = t.new(2), t.new(12)
    t.unify(x, Prod((a, b)))
    c, d, e = t.new(2), t.new(3), t.new(4)
    t.unify(Prod((a, b)), Prod((c, d, e)))
    # b (12) was refined into 3 x 4 to match.
    assert [t.atom_size(leaf) for leaf in t.leaves(x)] == [2, 3, 4]
    assert t.find(a.id) == t.find(c.id)
    assert t.resolve(b) == Prod((t.resolve(d), t.resolve(e)))


def test_concat_alignment_splits_atoms_at_boundaries() -> None:
    t = AtomTable()
    x = t.new(10)
    p, q = t.new(4), t.new(6)
    t.unify(x, Cat((p, q)))
    r, s, u = t.new(4), t.new(2), t.new(4)
    t.unify(Cat((p, q)), Cat((r, s, u)))
    assert [t.atom_size(leaf) for leaf in t.leaves(x)] == [4, 2, 4]
    assert t.find(p.id) == t.find(r.id)


def test_product_cannot_be_split_across_a_concat_boundary() -> None:
    t = AtomTable()
    p, q = t.new(2), t.new(4)
    prod = Prod((p, q))  # 8 = 2 x 4
    a, b = t.new(3), t.new(5)
    with pytest.raises(LayoutConflict):
        t.unify(Cat((Prod((p, q)), t.new(2))), Cat((a, b, t.new(2))))
    with pytest.raises(LayoutConflict, match="divide"):
        t.unify(Prod((t.new(3), t.new(4))), Prod((t.new(2), t.new(6))))
    assert t.size(prod) == 8


def test_layout_cannot_contain_itself() -> None:
    t = AtomTable()
    a = t.new(4)
    with pytest.raises(LayoutConflict):
        t.unify(a, Cat((a, t.new(0))))


def test_freeze_propagates_through_refinement_and_union() -> None:
    t = AtomTable()
    x = t.new(6, frozen="model input")
    a, b = t.new(2), t.new(3)
    t.unify(x, Prod((a, b)))
    assert t.is_frozen(a) and t.is_frozen(b)
    assert "model input" in t.frozen_reasons(b)
    # Freezing after refinement reaches the leaves, and unions inherit it.
    y = t.new(4)
    c, d = t.new(2), t.new(2)
    t.unify(y, Cat((c, d)))
    t.freeze(y, "user exclusion")
    e = t.new(2)
    t.unify(e, c)
    assert t.is_frozen(e) and t.frozen_reasons(e) == ["user exclusion"]


def test_size_one_factors_are_ignored_in_products() -> None:
    t = AtomTable()
    five = t.new(5)
    x = Prod((t.new(1), five, t.new(1)))
    y = Prod((t.new(5), t.new(1)))
    t.unify(x, y)  # [1, 5, 1] and [5, 1] are the same units in the same order
    assert [a for a in t.leaves(x) if t.atom_size(a) > 1] == [t.resolve(five)]
    assert isinstance(t.resolve(five), Atom)
    assert t.find(five.id) == t.find(y.parts[0].id)  # type: ignore[union-attr]


def test_tags_follow_refinement() -> None:
    t = AtomTable()
    x = t.new(8)
    t.tag(x, "conv")
    a, b = t.new(4), t.new(2)
    t.unify(x, Prod((a, b)))
    assert "conv" in t.tags(a) and "conv" in t.tags(b)


def test_a_reshape_ties_equal_leading_and_trailing_dims_one_to_one() -> None:
    """A window partition of a padded map cannot align its spatial dims; the channels stay prunable."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import netdiet

    class Windows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.out = nn.Linear(3, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.pad(self.inp(x), (0, 0, 0, 1, 0, 1))  # 5x5 -> 6x6, windows of 3
            b = h.shape[0]
            h = h.view(b, 2, 3, 2, 3, -1).permute(0, 1, 3, 2, 4, 5).reshape(b * 4, 9, -1)
            return self.out(h.mean(1))

    space = netdiet.analyze(Windows().eval(), torch.randn(2, 5, 5, 3))
    assert [(g.kind, g.size) for g in space.groups] == [("neuron", 8)]
