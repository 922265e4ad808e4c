"""Symbolic layouts of tensor dimensions: which prunable units each position of a dimension belongs to.

Every dimension of every tensor in the traced graph is described by a layout tree over *atoms*:

- an atom is a set of interchangeable units (channels, heads, neurons, ...) of a fixed size;
- ``Prod(a, b)`` is the row-major product of layouts (a reshape of ``[H*D]`` into ``[H, D]``);
- ``Cat(a, b)`` is the concatenation of layouts (``torch.cat`` or the parts of a ``split``).

Ops unify the layouts of the dimensions they tie together. Unification may *refine* an atom: an atom
of size 768 unified with ``Prod(12 heads, 64)`` becomes that product, and every tensor that shares the
atom sees the refinement. After the whole graph is walked, each unrefined (leaf) atom that is not frozen
is one prunable group: keeping a subset of its units gives, by recursion over the tree, the positions
to keep in every parameter dimension that contains it. This is the whole trick behind concat/split
offsets, flatten->linear, channel shuffle, attention heads and grouped-query attention.

Frozen atoms may not shrink (model inputs and outputs, user exclusions, head_dim, reductions ...); the
freeze carries a human-readable reason so the user can see why a dimension is not offered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Atom:
    id: int


@dataclass(frozen=True)
class Prod:
    parts: tuple[Layout, ...]


@dataclass(frozen=True)
class Cat:
    parts: tuple[Layout, ...]


Layout = Atom | Prod | Cat


class LayoutConflict(Exception):
    """Two layouts cannot be aligned (for example a product split across a concat boundary)."""


class AtomTable:
    """Union-find over atoms, with refinement (an atom defined as a Prod/Cat of fresh atoms) and freezing."""

    def __init__(self) -> None:
        self._size: list[int] = []
        self._parent: list[int] = []
        self._defn: dict[int, Layout] = {}
        self._frozen: dict[int, list[str]] = {}
        self._tags: dict[int, set[str]] = {}

    # ----- creation and lookup -------------------------------------------------------------------
    def new(self, size: int, *, frozen: str | None = None, tag: str | None = None) -> Atom:
        if size < 0:
            raise ValueError(f"atom size must be >= 0, got {size}")
        idx = len(self._size)
        self._size.append(int(size))
        self._parent.append(idx)
        if frozen is not None:
            self._frozen[idx] = [frozen]
        if tag is not None:
            self._tags[idx] = {tag}
        return Atom(idx)

    def find(self, idx: int) -> int:
        root = idx
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[idx] != root:
            self._parent[idx], idx = root, self._parent[idx]
        return root

    def atom_size(self, atom: Atom) -> int:
        return self._size[self.find(atom.id)]

    def size(self, layout: Layout) -> int:
        if isinstance(layout, Atom):
            return self.atom_size(layout)
        if isinstance(layout, Prod):
            out = 1
            for p in layout.parts:
                out *= self.size(p)
            return out
        return sum(self.size(p) for p in layout.parts)

    def resolve(self, layout: Layout) -> Layout:
        """Expand refined atoms so the result mentions only leaf (unrefined) root atoms."""
        if isinstance(layout, Atom):
            root = self.find(layout.id)
            d = self._defn.get(root)
            return Atom(root) if d is None else self.resolve(d)
        parts = tuple(self.resolve(p) for p in layout.parts)
        return Prod(parts) if isinstance(layout, Prod) else Cat(parts)

    def leaves(self, layout: Layout) -> Iterator[Atom]:
        resolved = self.resolve(layout)
        stack: list[Layout] = [resolved]
        while stack:
            node = stack.pop()
            if isinstance(node, Atom):
                yield node
            else:
                stack.extend(reversed(node.parts))

    # ----- freezing and tags --------------------------------------------------------------------
    def freeze(self, layout: Layout, reason: str) -> None:
        for leaf in self.leaves(layout):
            reasons = self._frozen.setdefault(leaf.id, [])
            if reason not in reasons and len(reasons) < 8:
                reasons.append(reason)

    def frozen_reasons(self, atom: Atom) -> list[str]:
        return list(self._frozen.get(self.find(atom.id), []))

    def is_frozen(self, atom: Atom) -> bool:
        return bool(self._frozen.get(self.find(atom.id)))

    def tag(self, layout: Layout, tag: str) -> None:
        for leaf in self.leaves(layout):
            self._tags.setdefault(leaf.id, set()).add(tag)

    def tags(self, atom: Atom) -> set[str]:
        return set(self._tags.get(self.find(atom.id), set()))

    # ----- refinement ---------------------------------------------------------------------------
    def _define(self, root: int, layout: Layout) -> None:
        """Make leaf atom `root` an alias of `layout`; its freeze reasons and tags move to the leaves."""
        assert root not in self._defn and self.find(root) == root
        self._defn[root] = layout
        reasons = self._frozen.pop(root, [])
        tags = self._tags.pop(root, set())
        for reason in reasons:
            self.freeze(layout, reason)
        for tag in tags:
            self.tag(layout, tag)

    def _split(self, atom: Atom, first: int, kind: type) -> tuple[Atom, Atom]:
        root = self.find(atom.id)
        total = self._size[root]
        second = total // first if kind is Prod else total - first
        a, b = self.new(first), self.new(second)
        self._define(root, kind((a, b)))
        return a, b

    # ----- unification --------------------------------------------------------------------------
    def unify(self, x: Layout, y: Layout) -> None:
        """Declare that two dimensions index the same units in the same order."""
        sx, sy = self.size(x), self.size(y)
        if sx != sy:
            raise LayoutConflict(f"sizes differ: {sx} vs {sy}")
        if sx <= 1:
            return
        x, y = self.resolve(x), self.resolve(y)
        if isinstance(x, Atom) and isinstance(y, Atom):
            self._union(x, y)
            return
        if isinstance(x, Atom):
            self._bind(x, y)
            return
        if isinstance(y, Atom):
            self._bind(y, x)
            return
        if isinstance(x, Cat) and isinstance(y, Prod) and self._parts_of_product(x, y):
            return
        if isinstance(y, Cat) and isinstance(x, Prod) and self._parts_of_product(y, x):
            return
        if isinstance(x, Prod) or isinstance(y, Prod):
            xs, ys = self._factors(x), self._factors(y)
            if len(xs) == 1 and len(ys) == 1:
                self.unify(xs[0], ys[0])
                return
            self._align(xs, ys, Prod)
            return
        self._align(list(x.parts), list(y.parts), Cat)

    def _parts_of_product(self, whole: Cat, product: Prod) -> bool:
        """Cat(p1..pk) of k equal parts against Prod(k, rest): each part is `rest` (unit i of rest sits in
        every part, as q/k/v of a packed projection), and the k factor, which picks the part, is frozen.
        Swin V2 slices its packed qkv bias this way before the reshape to (3, heads, head_dim)."""
        parts = [p for p in whole.parts if self.size(p) > 0]
        factors = self._factors(product)
        k = len(parts)
        if k < 2 or len(factors) < 2 or self.size(factors[0]) != k:
            return False
        if any(self.size(p) * k != self.size(whole) for p in parts):
            return False
        rest = factors[1] if len(factors) == 2 else Prod(tuple(factors[1:]))
        self.freeze(factors[0], "picks a part of a concatenation")
        for part in parts:
            self.unify(part, rest)
        return True

    def _equal_parts(self, whole: Cat, k: int) -> bool:
        parts = [p for p in whole.parts if self.size(p) > 0]
        return len(parts) == k >= 2 and all(self.size(p) * k == self.size(whole) for p in parts)

    def _factors(self, layout: Layout) -> list[Layout]:
        """Flatten nested products and drop size-1 factors, which carry no units."""
        if isinstance(layout, Prod):
            out: list[Layout] = []
            for part in layout.parts:
                out.extend(self._factors(self.resolve(part)))
            return out
        return [layout] if self.size(layout) > 1 else []

    def _bind(self, atom: Atom, layout: Layout) -> None:
        for leaf in self.leaves(layout):
            if leaf.id == self.find(atom.id):
                raise LayoutConflict("a layout cannot contain itself")
        self._define(self.find(atom.id), layout)

    def _union(self, a: Atom, b: Atom) -> None:
        ra, rb = self.find(a.id), self.find(b.id)
        if ra == rb:
            return
        if ra > rb:
            ra, rb = rb, ra
        self._parent[rb] = ra
        for reason in self._frozen.pop(rb, []):
            reasons = self._frozen.setdefault(ra, [])
            if reason not in reasons and len(reasons) < 8:
                reasons.append(reason)
        tags = self._tags.pop(rb, set())
        if tags:
            self._tags.setdefault(ra, set()).update(tags)

    def _align(self, xs: list[Layout], ys: list[Layout], kind: type) -> None:
        """Walk two sequences of parts, splitting leaf atoms where their boundaries differ."""
        keep_min = 1 if kind is Cat else 2
        xs = [p for p in xs if self.size(p) >= keep_min]
        ys = [p for p in ys if self.size(p) >= keep_min]
        i = j = 0
        while i < len(xs) and j < len(ys):
            x, y = self.resolve(xs[i]), self.resolve(ys[j])
            sx, sy = self.size(x), self.size(y)
            if sx == sy:
                self.unify(x, y)
                i += 1
                j += 1
                continue
            small, big, big_list, big_idx, swap = (x, y, ys, j, False) if sx < sy else (y, x, xs, i, True)
            s_small, s_big = min(sx, sy), max(sx, sy)
            if not isinstance(big, Atom):
                if kind is Prod and isinstance(big, Cat) and self._equal_parts(big, s_small):
                    # a k-factor against a Cat of k equal parts: the factor picks the part, and the
                    # product continues with what every part is (their units tied)
                    parts = [p for p in big.parts if self.size(p) > 0]
                    for part in parts[1:]:
                        self.unify(parts[0], part)
                    self.freeze(small, "picks a part of a concatenation")
                    big_list[big_idx] = parts[0]
                    if swap:
                        j += 1
                    else:
                        i += 1
                    continue
                raise LayoutConflict(f"cannot split a {type(big).__name__} at {s_small} of {s_big}")
            if kind is Prod and s_big % s_small != 0:
                raise LayoutConflict(f"{s_small} does not divide {s_big}")
            head, rest = self._split(big, s_small, kind)
            self.unify(small, head)
            big_list[big_idx] = rest
            if swap:
                j += 1
            else:
                i += 1
        if i != len(xs) or j != len(ys):
            raise LayoutConflict("layouts have different structure")


def prod(parts: Sequence[Layout]) -> Layout:
    return parts[0] if len(parts) == 1 else Prod(tuple(parts))


def cat(parts: Sequence[Layout]) -> Layout:
    return parts[0] if len(parts) == 1 else Cat(tuple(parts))
