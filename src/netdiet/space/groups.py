"""Turn the graph's leaf atoms into named, user-facing groups with a kind and constraints."""

from __future__ import annotations

from dataclasses import dataclass, field

from netdiet.graph import Atom, AtomTable, GraphAnalysis, Prod

KINDS = ("channel", "neuron", "head", "kv_head", "hidden")


@dataclass(frozen=True)
class Member:
    """One place a group lives: dimension `dim` of parameter or buffer `param`."""

    param: str
    dim: int


@dataclass
class Group:
    """Units that must be kept or dropped together, everywhere they appear.

    `size` units; keep at least `min_keep`, in multiples of `multiple_of`. `note` says in words what a
    unit is (for heads: how many query heads go with each kv head).
    """

    name: str
    size: int
    kind: str
    atom: int
    members: list[Member]
    min_keep: int = 1
    multiple_of: int = 1
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "kind": self.kind,
            "min_keep": self.min_keep,
            "multiple_of": self.multiple_of,
            "members": [f"{m.param}:{m.dim}" for m in self.members],
            "note": self.note,
        }


@dataclass
class ExcludedGroup:
    """A dimension that will not shrink, and why (model output, user exclusion, head_dim, ...)."""

    name: str
    size: int
    atom: int
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "reasons": list(self.reasons)}


def build_groups(analysis: GraphAnalysis) -> tuple[list[Group], list[ExcludedGroup]]:
    table = analysis.table
    members: dict[int, list[Member]] = {}
    first_role: dict[int, tuple[str, int, int]] = {}
    for name, info in analysis.params.items():
        for dim, layout in enumerate(info.dims):
            leaves = [a for a in table.leaves(layout) if table.atom_size(a) > 1]
            for k, leaf in enumerate(leaves):
                members.setdefault(leaf.id, [])
                if Member(name, dim) not in members[leaf.id]:
                    members[leaf.id].append(Member(name, dim))
                first_role.setdefault(leaf.id, (name, dim, k if len(leaves) > 1 else -1))
    gqa = _gqa_kv_atoms(analysis)
    head_owner = _head_owners(analysis)
    groups: list[Group] = []
    excluded: list[ExcludedGroup] = []
    used: set[str] = set()
    for atom_id, mem in members.items():
        atom = Atom(atom_id)
        size = table.atom_size(atom)
        param, dim, part = first_role[atom_id]
        tags = table.tags(atom)
        kind = _kind(tags, atom_id in gqa)
        base = _base_name(analysis, param, dim, part, kind, head_owner.get(atom_id))
        name = _unique(base, used)
        if table.is_frozen(atom) or not tags:
            reasons = table.frozen_reasons(atom) or [
                "not a feature dimension of any layer (e.g. a kernel size)"
            ]
            excluded.append(ExcludedGroup(name, size, atom_id, reasons))
            continue
        note = ""
        if kind == "kv_head":
            note = f"each unit is one kv head with its {gqa[atom_id]} query heads (GQA ratio kept)"
        elif kind == "head":
            note = "each unit is one attention head (head_dim kept)"
        groups.append(Group(name, size, kind, atom_id, mem, note=note))
    return groups, excluded


def _kind(tags: set[str], is_kv: bool) -> str:
    if "head" in tags:
        return "kv_head" if is_kv else "head"
    if "norm" in tags or "embedding" in tags:
        return "hidden"
    if "conv" in tags or "bn" in tags:
        return "channel"
    return "neuron"


def _gqa_kv_atoms(analysis: GraphAnalysis) -> dict[int, int]:
    """Atoms that are kv heads of grouped-query attention -> query heads per kv head."""
    table: AtomTable = analysis.table
    out: dict[int, int] = {}
    for rec in analysis.attentions.values():
        q = table.resolve(rec.q_heads)
        if isinstance(q, Prod):
            leaves = [a for a in table.leaves(q) if table.atom_size(a) > 1]
            kv = [a for a in table.leaves(rec.kv_heads) if table.atom_size(a) > 1]
            for a in kv:
                if a in leaves:
                    out[a.id] = table.size(q) // max(1, table.atom_size(a))
    return out


def _head_owners(analysis: GraphAnalysis) -> dict[int, str]:
    table = analysis.table
    out: dict[int, str] = {}
    for rec in analysis.attentions.values():
        for layout in (rec.kv_heads, rec.q_heads):
            for a in table.leaves(layout):
                out.setdefault(a.id, rec.module_path)
    return out


def _base_name(analysis: GraphAnalysis, param: str, dim: int, part: int, kind: str, owner: str | None) -> str:
    if kind in ("head", "kv_head") and owner is not None:
        return f"{owner}.{'kv_heads' if kind == 'kv_head' else 'heads'}" if owner else kind
    if kind == "hidden":
        return "hidden"
    info = analysis.params[param]
    role = analysis.roles.get((param, dim), f"dim{dim}")
    prefix = info.module_path or info.attr
    base = f"{prefix}.{role}" if prefix else role
    if part >= 0:
        base += f"[{part}]"
    return base


def _unique(base: str, used: set[str]) -> str:
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}.{k}"
    used.add(name)
    return name
