"""Residual blocks: modules that can be dropped whole because their input skips around them.

A module is a block when, in the traced graph, (1) one tensor from outside enters it (its stream input;
masks and other side inputs may enter too), (2) exactly one tensor leaves it, with the same shape and the
same layout as the stream input, and (3) inside it an `add` takes the stream input itself as an operand
(the skip connection). Replacing such a module by the identity leaves the stream intact, so depth is a
knob: kept (1) or dropped (0). Pre-norm transformer layers and ResNet basic/bottleneck blocks without
downsampling qualify; post-norm layers (a norm after the add) and blocks that change shape do not.
"""

from __future__ import annotations

from torch import fx

from netdiet.graph.layout import AtomTable, Layout
from netdiet.graph.records import BlockRecord, TensorValue

COPIES = ("to", "_to_copy", "contiguous", "clone", "alias", "detach", "dropout", "type_as")


def _units(table: AtomTable, layout: Layout) -> list[int]:
    """The atoms (of more than one unit) a dimension is made of, in order: its identity as a stream."""
    return [table.find(a.id) for a in table.leaves(layout) if table.atom_size(a) > 1]


def find_blocks(
    nodes: list[fx.Node],
    stacks: dict[fx.Node, list[str]],
    values: dict[fx.Node, object],
    table: AtomTable,
    candidates: set[str],
) -> list[BlockRecord]:
    """Blocks among `candidates` (the layers of repeated stacks: children of a ModuleList/Sequential,
    where depth pruning drops layers; containers and sub-modules of a layer are not candidates).
    `stacks`: each call node's module paths."""
    members: dict[str, list[fx.Node]] = {}
    for node in nodes:
        for path in stacks.get(node, []):
            if path:
                members.setdefault(path, []).append(node)
    out: list[BlockRecord] = []
    for path, inside in members.items():
        if path not in candidates:
            continue
        record = _block(path, inside, values, table)
        if record is not None:
            out.append(record)
    return out


def _block(
    path: str,
    inside: list[fx.Node],
    values: dict[fx.Node, object],
    table: AtomTable,
) -> BlockRecord | None:
    own = set(inside)

    entering: list[fx.Node] = []
    for node in inside:
        for arg in node.all_input_nodes:
            v = values.get(arg)
            if isinstance(v, TensorValue) and v.param is None and arg not in own and arg.op != "get_attr":
                if arg not in entering:
                    entering.append(arg)
    leaving = [n for n in inside if any(u not in own for u in n.users)]
    if len(leaving) != 1 or not entering:
        return None
    out_node = leaving[0]
    out_value = values.get(out_node)
    if not isinstance(out_value, TensorValue):
        return None
    stream = next(
        (
            e
            for e in entering
            if isinstance(v := values.get(e), TensorValue)
            and v.shape == out_value.shape
            and all(
                s == 1 or _units(table, a) == _units(table, b)
                for a, b, s in zip(v.dims, out_value.dims, v.shape)
            )
        ),
        None,
    )
    if stream is None:
        return None
    same = {stream}  # the stream itself, or a copy/cast of it (HF casts the residual before adding)
    for n in inside:
        if str(n.target).split(".")[1:2] and str(n.target).split(".")[1] in COPIES:
            if n.all_input_nodes and n.all_input_nodes[0] in same:
                same.add(n)
    skip = any(
        str(n.target).startswith("aten.add")
        and len(n.all_input_nodes) == 2
        and any(a in same for a in n.all_input_nodes)
        for n in inside
    )
    if not skip:
        return None
    return BlockRecord(path, stream.name, out_node.name)
