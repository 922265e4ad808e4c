"""Shape ops: reshapes refine atoms into products, concat/split into sums, permutes reorder dims."""

from __future__ import annotations

from typing import Any

from torch import fx

from netdiet.graph.layout import Cat, Layout, Prod, cat
from netdiet.graph.records import TensorValue
from netdiet.graph.walker import Walker, op_name, rule


def _dim(d: Any, rank: int) -> int:
    return int(d) % rank if rank else 0


def _input(w: Walker, node: fx.Node) -> TensorValue:
    x = w.tensor(node.args[0])
    assert x is not None, f"{node.name}: first argument is not a tensor"
    return x


@rule(
    "aten.view",
    "aten.reshape",
    "aten._unsafe_view",
    "aten.flatten",
    "aten.unflatten",
    "aten.view_as",
    "aten.reshape_as",
    "aten.squeeze",
    "aten.unsqueeze",
)
def reshape(w: Walker, node: fx.Node) -> Any:
    """Same elements, new shape: Prod(input dims) == Prod(output dims), aligned by factor sizes.

    Leading and trailing dims of equal size are the same dim on both sides (row-major), so they are tied
    one to one and only the middle is aligned as a product: a window partition whose padded spatial dims
    cannot be aligned then freezes the spatial dims, not the channels beside them (Swin's stages)."""
    x = _input(w, node)
    shape = w.out_shape()
    if tuple(shape) == x.shape:
        return TensorValue(shape, list(x.dims), x.param)
    out = w.fresh(shape, None)
    lo, hi_in, hi_out = 0, len(x.shape), len(shape)
    while hi_in > lo and hi_out > lo and x.shape[hi_in - 1] == shape[hi_out - 1]:
        hi_in, hi_out = hi_in - 1, hi_out - 1
        w.unify(x.dims[hi_in], out.dims[hi_out])
    while lo < hi_in and lo < hi_out and x.shape[lo] == shape[lo]:
        w.unify(x.dims[lo], out.dims[lo])
        lo += 1
    w.unify(Prod(tuple(x.dims[lo:hi_in])), Prod(tuple(out.dims[lo:hi_out])))
    for d, size in zip(out.dims, shape):
        if size == 1:
            w.table.freeze(d, "size-1 dimension")
    return out


@rule("aten.permute")
def permute(w: Walker, node: fx.Node) -> Any:
    x = _input(w, node)
    order = [_dim(d, len(x.shape)) for d in node.args[1]]
    return TensorValue(tuple(x.shape[i] for i in order), [x.dims[i] for i in order])


@rule("aten.transpose", "aten.swapaxes", "aten.swapdims")
def transpose(w: Walker, node: fx.Node) -> Any:
    x = _input(w, node)
    a, b = _dim(node.args[1], len(x.shape)), _dim(node.args[2], len(x.shape))
    dims, shape = list(x.dims), list(x.shape)
    dims[a], dims[b] = dims[b], dims[a]
    shape[a], shape[b] = shape[b], shape[a]
    return TensorValue(tuple(shape), dims)


@rule("aten.t", "aten.numpy_T")
def t(w: Walker, node: fx.Node) -> Any:
    x = _input(w, node)
    return TensorValue(tuple(reversed(x.shape)), list(reversed(x.dims)))


@rule("aten.movedim")
def movedim(w: Walker, node: fx.Node) -> Any:
    x = _input(w, node)
    rank = len(x.shape)
    src = node.args[1] if isinstance(node.args[1], (list, tuple)) else [node.args[1]]
    dst = node.args[2] if isinstance(node.args[2], (list, tuple)) else [node.args[2]]
    src = [_dim(s, rank) for s in src]
    dst = [_dim(d, rank) for d in dst]
    order = [i for i in range(rank) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return TensorValue(tuple(x.shape[i] for i in order), [x.dims[i] for i in order])


def _grown(
    w: Walker, x: TensorValue, shape: tuple[int, ...], reason: str, freeze_source: bool
) -> TensorValue:
    """Dims whose size is unchanged keep their layout; grown dims get new atoms frozen for `reason`."""
    offset = len(shape) - len(x.shape)
    dims: list[Layout] = []
    for k, size in enumerate(shape):
        i = k - offset
        if i >= 0 and x.shape[i] == size:
            dims.append(x.dims[i])
            continue
        if freeze_source and i >= 0:
            w.freeze(x.dims[i], "repeated")
        grown = w.table.new(size, frozen=f"{reason} {w.where()}")
        w.tag(grown, "repeat")
        dims.append(grown)
    return TensorValue(shape, dims)


@rule("aten.expand", "aten.expand_as", "aten.broadcast_to")
def expand(w: Walker, node: fx.Node) -> Any:
    """Size-1 dims grown by expand get new atoms; they are frozen (e.g. GQA's query heads per kv head)."""
    return _grown(w, _input(w, node), w.out_shape(), "broadcast (a repeat count fixed in code) by", False)


@rule("aten.repeat", "aten.tile", "aten.repeat_interleave")
def repeat(w: Walker, node: fx.Node) -> Any:
    x = w.tensor(node.args[0])
    if x is None:
        return w.fresh(w.out_shape(), f"created by {w.where()}")
    return _grown(w, x, w.out_shape(), "repeated by", True)


@rule("aten.slice", "aten.narrow")
def slice_(w: Walker, node: fx.Node) -> Any:
    """A contiguous slice of a dim is one segment of it: Cat(before, kept, after)."""
    x = _input(w, node)
    shape = w.out_shape()
    rank = len(x.shape)
    dim = _dim(node.args[1] if len(node.args) > 1 else 0, rank)
    n = x.shape[dim]
    if op_name(node) == "aten.narrow":
        start = int(node.args[2]) % max(n, 1)
        end, step = start + int(node.args[3]), 1
    else:
        start = node.args[2] if len(node.args) > 2 and node.args[2] is not None else 0
        end = node.args[3] if len(node.args) > 3 and node.args[3] is not None else n
        step = int(node.args[4]) if len(node.args) > 4 else 1
        start, end = int(start), int(end)
        start = max(0, min(n, start + n if start < 0 else start))
        end = max(0, min(n, end + n if end < 0 else end))
    dims = list(x.dims)
    if start == 0 and end >= n and step == 1:
        return TensorValue(shape, dims)
    if step != 1:
        w.freeze(x.dims[dim], "strided slice")
        dims[dim] = w.table.new(shape[dim], frozen=f"strided slice at {w.where()}")
        return TensorValue(shape, dims)
    segs: list[Layout] = []
    pre = w.table.new(start) if start > 0 else None
    mid = w.table.new(end - start)
    post = w.table.new(n - end) if end < n else None
    segs = [s for s in (pre, mid, post) if s is not None]
    w.unify(x.dims[dim], cat(segs))
    if shape[dim] <= 1:
        w.freeze(mid, "single-element slice")
    dims[dim] = mid
    return TensorValue(shape, dims)


@rule("aten.select")
def select(w: Walker, node: fx.Node) -> Any:
    """Picking one index of a dim fixes which unit survives: that dim is frozen."""
    x = _input(w, node)
    dim = _dim(node.args[1], len(x.shape))
    if x.shape[dim] > 1:
        w.freeze(x.dims[dim], "indexed by select")
    dims = [d for i, d in enumerate(x.dims) if i != dim]
    return TensorValue(w.out_shape(), dims)


@rule(
    "aten.gather",
    "aten.take_along_dim",
    "aten.scatter",
    "aten.scatter_add",
    "aten.index_put",
    "aten.masked_select",
    "aten.sort",
    "aten.topk",
)
def indexing(w: Walker, node: fx.Node) -> Any:
    """Data-dependent gathers: every dimension involved is frozen, outputs get frozen dims."""
    for arg in node.args:
        items = arg if isinstance(arg, (list, tuple)) else [arg]
        for a in items:
            t = w.tensor(a)
            if t is not None:
                for d in t.dims:
                    w.freeze(d, "used by an indexing op")
    meta = node.meta["val"]
    if isinstance(meta, (tuple, list)):
        return tuple(w.fresh([int(s) for s in m.shape], f"result of {w.where()}") for m in meta)
    return w.fresh(w.out_shape(), f"result of {w.where()}")


@rule("aten.cat", "aten.concat", "aten.concatenate")
def concat(w: Walker, node: fx.Node) -> Any:
    tensors = [w.tensor(a) for a in node.args[0]]
    shape = w.out_shape()
    dim = _dim(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0), len(shape))
    parts = [t for t in tensors if t is not None and len(t.shape) == len(shape)]
    dims: list[Layout] = []
    for k in range(len(shape)):
        if k == dim:
            dims.append(Cat(tuple(t.dims[k] for t in parts)) if len(parts) > 1 else parts[0].dims[k])
            continue
        first = parts[0].dims[k]
        for t in parts[1:]:
            w.unify(first, t.dims[k])
        dims.append(first)
    return TensorValue(shape, dims)


@rule("aten.stack")
def stack(w: Walker, node: fx.Node) -> Any:
    tensors = [w.tensor(a) for a in node.args[0]]
    shape = w.out_shape()
    dim = _dim(node.args[1] if len(node.args) > 1 else 0, len(shape))
    parts = [t for t in tensors if t is not None]
    dims: list[Layout] = list(parts[0].dims)
    for t in parts[1:]:
        for a, b in zip(dims, t.dims):
            w.unify(a, b)
    dims.insert(dim, w.table.new(shape[dim], frozen=f"stacked by {w.where()}"))
    return TensorValue(shape, dims)


@rule("aten.split", "aten.split_with_sizes", "aten.chunk", "aten.tensor_split", "aten.unsafe_split")
def split(w: Walker, node: fx.Node) -> Any:
    """Each output is one segment of the split dim: the input dim becomes Cat(segments)."""
    x = _input(w, node)
    metas = node.meta["val"]
    rank = len(x.shape)
    dim_arg = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    dim = _dim(dim_arg, rank)
    sizes = [int(m.shape[dim]) for m in metas]
    segs = [w.table.new(s) for s in sizes]
    w.unify(x.dims[dim], cat(segs))
    size_arg = node.args[1] if len(node.args) > 1 else None
    if op_name(node) != "aten.split_with_sizes" and not isinstance(size_arg, (list, tuple)):
        # An int split size (chunk) cuts into equal parts at any width: pruned, the parts must still be
        # equal, so unit i of every part goes together; unequal parts would move the cut, so they freeze.
        if len(set(sizes)) == 1:
            for seg in segs[1:]:
                w.unify(segs[0], seg)
        else:
            w.freeze(x.dims[dim], "split into unequal parts by an int size")
    outs = []
    for m, seg in zip(metas, segs):
        dims = list(x.dims)
        dims[dim] = seg
        outs.append(TensorValue(tuple(int(s) for s in m.shape), dims))
    return tuple(outs)


@rule("aten.unbind")
def unbind(w: Walker, node: fx.Node) -> Any:
    x = _input(w, node)
    dim = _dim(node.args[1] if len(node.args) > 1 else 0, len(x.shape))
    if x.shape[dim] > 1:
        w.freeze(x.dims[dim], "unbound into separate tensors")
    dims = [d for i, d in enumerate(x.dims) if i != dim]
    return tuple(TensorValue(tuple(int(s) for s in m.shape), list(dims)) for m in node.meta["val"])


@rule("getitem")
def getitem(w: Walker, node: fx.Node) -> Any:
    container = w.val(node.args[0])
    if isinstance(container, (tuple, list)):
        return container[int(node.args[1])]
    return w.fresh(w.out_shape(), f"item of an opaque value at {w.where()}")


@rule("aten.constant_pad_nd", "aten.pad")
def pad(w: Walker, node: fx.Node) -> Any:
    """Padding a dim by fixed amounts: Cat(frozen pad, input, frozen pad) (ResNet option-A shortcuts)."""
    x = _input(w, node)
    shape = w.out_shape()
    pads = list(node.args[1])
    dims = list(x.dims)
    rank = len(x.shape)
    for j in range(len(pads) // 2):
        k = rank - 1 - j
        lo, hi = int(pads[2 * j]), int(pads[2 * j + 1])
        if lo == 0 and hi == 0:
            continue
        if lo < 0 or hi < 0:
            w.freeze(x.dims[k], "cropped by negative padding")
            dims[k] = w.table.new(shape[k], frozen=f"cropped at {w.where()}")
            continue
        parts: list[Layout] = []
        if lo:
            parts.append(w.table.new(lo, frozen=f"padding fixed in code at {w.where()}"))
        parts.append(x.dims[k])
        if hi:
            parts.append(w.table.new(hi, frozen=f"padding fixed in code at {w.where()}"))
        dims[k] = Cat(tuple(parts))
    return TensorValue(shape, dims)
