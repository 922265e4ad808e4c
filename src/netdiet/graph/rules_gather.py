"""Ops that move elements along some dims and leave the others alone: roll, flip, index, index_select.

Swin's shifted windows roll and its relative position bias gathers rows of a (positions, heads) table:
the rolled or indexed dims are frozen (which positions survive is fixed), every other dim keeps its
layout, so channels and heads stay prunable through them.
"""

from __future__ import annotations

from typing import Any

from torch import fx

from netdiet.graph.records import TensorValue
from netdiet.graph.walker import Walker, rule


def _input(w: Walker, node: fx.Node) -> TensorValue:
    x = w.tensor(node.args[0])
    assert x is not None, f"{node.name}: first argument is not a tensor"
    return x


def _dims_arg(value: Any, rank: int) -> list[int]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [int(d) % rank for d in items]


@rule("aten.roll", "aten.flip")
def roll(w: Walker, node: fx.Node) -> Any:
    """Rolled/flipped dims are frozen; a roll without dims flattens first, so it freezes everything."""
    x = _input(w, node)
    rank = len(x.shape)
    if str(node.target).startswith("aten.roll"):
        arg = node.args[2] if len(node.args) > 2 else node.kwargs.get("dims")
        moved = _dims_arg(arg, rank) or list(range(rank))
    else:
        moved = _dims_arg(node.args[1] if len(node.args) > 1 else node.kwargs.get("dims"), rank)
    for d in moved:
        if x.shape[d] > 1:
            w.freeze(x.dims[d], f"positions moved by {str(node.target).split('.')[1]}")
    return TensorValue(w.out_shape(), list(x.dims))


@rule("aten.index_select")
def index_select(w: Walker, node: fx.Node) -> Any:
    x = _input(w, node)
    rank = len(x.shape)
    dim_arg: Any = node.args[1]
    dim = int(dim_arg) % rank
    w.freeze(x.dims[dim], "indexed by index_select")
    index = w.tensor(node.args[2])
    if index is not None:
        for d in index.dims:
            w.freeze(d, "index tensor")
    shape = w.out_shape()
    dims = list(x.dims)
    dims[dim] = w.table.new(shape[dim], frozen=f"result of {w.where()}")
    return TensorValue(shape, dims)


@rule("aten.index")
def index(w: Walker, node: fx.Node) -> Any:
    """x[i0, i1, ...] with tensor indices on some dims: those dims and the indices are frozen; the result
    has the broadcast index dims (where the first indexed dim was, or first if the indexed dims are not
    adjacent) followed or preceded by x's other dims with their layouts."""
    x = _input(w, node)
    index_arg: Any = node.args[1]
    indices = list(index_arg)
    shape = w.out_shape()
    indexed = [i for i, t in enumerate(indices) if t is not None]
    for i in indexed:
        if x.shape[i] > 1:
            w.freeze(x.dims[i], "indexed by a tensor")
        t = w.tensor(indices[i])
        if t is not None:
            for d in t.dims:
                w.freeze(d, "index tensor")
    rest = [i for i in range(len(x.shape)) if i not in indexed]
    n_index_dims = len(shape) - len(rest)
    if not indexed or n_index_dims < 0:
        return w.fresh(shape, f"result of {w.where()}")
    adjacent = indexed == list(range(indexed[0], indexed[-1] + 1))
    first = indexed[0] if adjacent else 0
    before = [i for i in rest if i < first]
    after = [i for i in rest if i >= first]
    fresh = [
        w.table.new(shape[len(before) + k], frozen=f"result of {w.where()}") for k in range(n_index_dims)
    ]
    dims = [x.dims[i] for i in before] + fresh + [x.dims[i] for i in after]
    if any(w.table.size(d) != s for d, s in zip(dims, shape)):
        return w.fresh(shape, f"result of {w.where()}")
    return TensorValue(shape, dims)
