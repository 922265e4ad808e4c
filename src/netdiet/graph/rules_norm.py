"""Normalisation, pooling, reductions, embeddings and attention."""

from __future__ import annotations

from typing import Any

from torch import fx

from netdiet.graph.layout import Atom, Layout, Prod
from netdiet.graph.records import TensorValue
from netdiet.graph.rules_elementwise import elementwise
from netdiet.graph.walker import Walker, op_name, rule


def _t(w: Walker, arg: Any) -> TensorValue:
    t = w.tensor(arg)
    assert t is not None, "expected a tensor argument"
    return t


def _same(x: TensorValue, shape: tuple[int, ...]) -> TensorValue:
    return TensorValue(shape, list(x.dims))


def _normalized(w: Walker, node: fx.Node, x: TensorValue, stats: str) -> Any:
    """A norm's output keeps the input's layout; extra outputs (mean, rstd) get frozen dims."""
    meta = node.meta["val"]
    if isinstance(meta, (tuple, list)):
        out = _same(x, tuple(int(s) for s in meta[0].shape))
        rest = [w.fresh([int(s) for s in m.shape], stats) for m in meta[1:]]
        return (out, *rest)
    return _same(x, w.out_shape())


@rule(
    "aten.batch_norm",
    "aten._native_batch_norm_legit_no_training",
    "aten._native_batch_norm_legit_functional",
    "aten.native_batch_norm",
    "aten._native_batch_norm_legit",
    "aten.instance_norm",
)
def batch_norm(w: Walker, node: fx.Node) -> Any:
    """Per-channel affine + statistics on dim 1: every per-channel tensor follows the channel group."""
    x = _t(w, node.args[0])
    for arg in node.args[1:5]:
        t = w.tensor(arg)
        if t is not None and len(t.shape) == 1:
            w.unify(t.dims[0], x.dims[1])
    w.tag(x.dims[1], "bn")
    return _normalized(w, node, x, "batch-norm statistics")


@rule("aten.layer_norm", "aten.native_layer_norm", "aten.rms_norm", "aten._fused_rms_norm")
def layer_norm(w: Walker, node: fx.Node) -> Any:
    """Normalising over the last dim only is prunable: the masked reference renormalises over kept units."""
    x = _t(w, node.args[0])
    normalized = list(node.args[1])
    if len(normalized) == 1:
        for arg in node.args[2:4]:
            t = w.tensor(arg)
            if t is not None:
                w.unify(t.dims[0], x.dims[-1])
        w.tag(x.dims[-1], "norm")
        w.add_norm(w.module_path(), x.dims[-1])
    else:
        for d in x.dims[-len(normalized) :]:
            w.freeze(d, "normalised jointly with other dims")
        for arg in node.args[2:4]:
            t = w.tensor(arg)
            if t is not None:
                for a, b in zip(t.dims, x.dims[-len(normalized) :]):
                    w.unify(a, b)
    return _normalized(w, node, x, "norm statistics")


@rule("aten.group_norm", "aten.native_group_norm")
def group_norm(w: Walker, node: fx.Node) -> Any:
    """Channels = Prod(groups, per-group): only whole norm groups may go, so statistics stay exact."""
    x = _t(w, node.args[0])
    name = op_name(node)
    groups = int(node.args[1]) if name == "aten.group_norm" else int(node.args[6])
    weight_args = node.args[2:4] if name == "aten.group_norm" else node.args[1:3]
    per = x.shape[1] // groups
    g_atom, per_atom = (
        w.table.new(groups),
        w.table.new(per, frozen=f"channels within one GroupNorm group ({w.where()})"),
    )
    w.unify(x.dims[1], Prod((g_atom, per_atom)))
    for arg in weight_args:
        t = w.tensor(arg)
        if t is not None:
            w.unify(t.dims[0], x.dims[1])
    w.tag(x.dims[1], "bn")
    w.add_groups(w.module_path(), g_atom)
    return _normalized(w, node, x, "norm statistics")


POOLS = (
    "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices "
    "avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
    "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d upsample_nearest1d upsample_nearest2d "
    "upsample_nearest3d upsample_bilinear2d upsample_bicubic2d upsample_linear1d upsample_trilinear3d "
    "_upsample_nearest_exact2d _upsample_bilinear2d_aa pixel_unshuffle"
).split()


@rule(*(f"aten.{n}" for n in POOLS))
def pool(w: Walker, node: fx.Node) -> Any:
    """Spatial ops keep batch and channel dims; spatial dims get new frozen atoms."""
    x = _t(w, node.args[0])
    meta = node.meta["val"]
    metas = meta if isinstance(meta, (tuple, list)) else [meta]
    outs = []
    for m in metas:
        shape = tuple(int(s) for s in m.shape)
        lead = len(shape) - (len(x.shape) - 2) if len(x.shape) >= 3 else len(shape)
        dims: list[Layout] = list(x.dims[: min(2, len(x.dims))]) if len(x.shape) > 2 else list(x.dims[:1])
        if len(shape) == len(x.shape) - 1:  # unbatched input (C, H, W)
            dims = list(x.dims[:1])
        del lead
        dims += [w.table.new(s, frozen=f"spatial size of {w.where()}") for s in shape[len(dims) :]]
        outs.append(TensorValue(shape, dims))
    return tuple(outs) if isinstance(meta, (tuple, list)) else outs[0]


REDUCTIONS = (
    "mean sum amax amin max min var std var_mean std_mean prod norm logsumexp argmax argmin all any "
    "linalg_vector_norm count_nonzero nansum median mode aminmax"
).split()


@rule(*(f"aten.{n}" for n in REDUCTIONS))
def reduce(w: Walker, node: fx.Node) -> Any:
    """Reducing over a dim mixes its units: frozen, except the statistic of an RMSNorm-like module.

    `min`/`max` with a tensor second argument (`aten.min.other`) are elementwise, not reductions.
    """
    if len(node.args) > 1 and w.tensor(node.args[1]) is not None:
        return elementwise(w, node)
    x = _t(w, node.args[0])
    rank = len(x.shape)
    dim_pos = 2 if op_name(node) in ("aten.linalg_vector_norm", "aten.norm") else 1  # (x, ord, dim, ..)
    dims_arg = node.args[dim_pos] if len(node.args) > dim_pos else node.kwargs.get("dim")
    if dims_arg is None or (isinstance(dims_arg, (list, tuple)) and len(dims_arg) == 0):
        reduced = list(range(rank))
    elif isinstance(dims_arg, (list, tuple)):
        reduced = [int(d) % rank for d in dims_arg]
    elif isinstance(dims_arg, int):
        reduced = [dims_arg % rank]
    else:
        reduced = list(range(rank))
    norm_path = w.norm_scope()
    for d in reduced:
        if x.shape[d] <= 1:
            continue
        if norm_path is not None and d == rank - 1 and op_name(node) in ("aten.mean", "aten.var", "aten.sum"):
            w.tag(x.dims[d], "norm")
            w.add_norm(norm_path, x.dims[d])
            continue
        w.freeze(x.dims[d], f"reduced by {op_name(node)}")
    meta = node.meta["val"]
    metas = meta if isinstance(meta, (tuple, list)) else [meta]
    outs = []
    for m in metas:
        shape = tuple(int(s) for s in m.shape)
        if len(shape) == rank:
            dims = [w.table.new(1) if i in reduced else x.dims[i] for i in range(rank)]
        else:
            dims = [x.dims[i] for i in range(rank) if i not in reduced]
        if len(dims) != len(shape):
            outs.append(w.fresh(shape, f"result of {w.where()}"))
        else:
            outs.append(TensorValue(shape, dims))
    return tuple(outs) if isinstance(meta, (tuple, list)) else outs[0]


@rule(
    "aten.softmax",
    "aten._softmax",
    "aten.log_softmax",
    "aten._log_softmax",
    "aten.cumsum",
    "aten.cumprod",
    "aten.special_softmax",
    "aten.logcumsumexp",
    "aten.cummax",
)
def softmax(w: Walker, node: fx.Node) -> Any:
    x = _t(w, node.args[0])
    d = int(node.args[1]) % len(x.shape)
    if x.shape[d] > 1:
        w.freeze(x.dims[d], f"normalised by {op_name(node)}")
    meta = node.meta["val"]
    if isinstance(meta, (tuple, list)):
        return tuple(_same(x, tuple(int(s) for s in m.shape)) for m in meta)
    return _same(x, w.out_shape())


@rule("aten.embedding")
def embedding(w: Walker, node: fx.Node) -> Any:
    weight, idx = _t(w, node.args[0]), _t(w, node.args[1])
    w.freeze(weight.dims[0], "vocabulary (embedding rows)")
    w.tag(weight.dims[1], "embedding")
    return TensorValue(w.out_shape(), list(idx.dims) + [weight.dims[1]])


def unrepeated(w: Walker, heads: Layout) -> Layout:
    """The kv heads before an expand-based repeat (HF `repeat_kv`): Prod(kv, rep) -> kv.

    Head-count attributes such as `num_key_value_heads` count the projected kv heads, not the copies
    SDPA sees after the repeat; the repeat factor is an atom tagged "repeat" by the expand rule.
    """
    resolved = w.table.resolve(heads)
    if not isinstance(resolved, Prod):
        return heads
    factors = w.table._factors(resolved)
    while factors and isinstance(factors[-1], Atom) and "repeat" in w.table.tags(factors[-1]):
        factors.pop()
    if not factors:
        return w.table.new(1)
    return factors[0] if len(factors) == 1 else Prod(tuple(factors))


@rule("aten.scaled_dot_product_attention")
def sdpa(w: Walker, node: fx.Node) -> Any:
    """q [.., Hq, L, E], k [.., Hk, S, E], v [.., Hk, S, Ev]. Heads are units; head_dim is kept whole.

    Grouped-query attention (Hq = r * Hk) ties query heads to Prod(kv head, r) with r frozen, so a
    kv head and its r query heads go together and the query-per-kv ratio is kept.
    """
    q, k, v = _t(w, node.args[0]), _t(w, node.args[1]), _t(w, node.args[2])
    shape = w.out_shape()
    w.unify(q.dims[-1], k.dims[-1])
    w.unify(k.dims[-2], v.dims[-2])
    w.freeze(q.dims[-1], "attention head_dim (kept whole; the softmax scale depends on it)")
    w.freeze(v.dims[-1], "attention head_dim (kept whole)")
    rank = len(q.shape)
    for i in range(rank - 3):
        if q.shape[i] == k.shape[i] and q.shape[i] > 1:
            w.unify(q.dims[i], k.dims[i])
            w.unify(k.dims[i], v.dims[i])
    if rank >= 3:
        hq, hk = q.shape[-3], k.shape[-3]
        w.unify(k.dims[-3], v.dims[-3])
        if hq == hk:
            w.unify(q.dims[-3], k.dims[-3])
        elif hk > 0 and hq % hk == 0:
            rep = w.table.new(hq // hk, frozen=f"query heads per kv head (GQA ratio kept) at {w.where()}")
            w.unify(q.dims[-3], Prod((k.dims[-3], rep)))
        else:
            w.freeze(q.dims[-3], "query/key head counts do not divide")
            w.freeze(k.dims[-3], "query/key head counts do not divide")
        w.tag(q.dims[-3], "head")
        w.tag(k.dims[-3], "head")
        w.add_attention(q.dims[-3], unrepeated(w, k.dims[-3]), q.shape[-1])
    mask = w.tensor(node.args[3]) if len(node.args) > 3 else w.tensor(node.kwargs.get("attn_mask"))
    if mask is not None:
        # The mask broadcasts against the scores [.., Hq, L, S]: a per-head bias (T5's relative position
        # bias, ALiBi) shares the query heads; its sequence dims, and any dim that broadcasts, stay whole.
        for i in range(1, len(mask.shape) + 1):
            size = mask.shape[-i]
            if i == 3 and rank >= 3 and size == q.shape[-3] and size > 1:
                w.unify(mask.dims[-i], q.dims[-3])
            elif i > 3 and i <= rank and size == q.shape[-i] and size > 1:
                w.unify(mask.dims[-i], q.dims[-i])
            else:
                w.freeze(mask.dims[-i], "attention mask")
    lead = list(q.dims[:-2])
    w.add_cost("sdpa_qk", lead + [q.dims[-2], k.dims[-2], q.dims[-1]])
    w.add_cost("sdpa_av", lead + [q.dims[-2], k.dims[-2], v.dims[-1]])
    return TensorValue(shape, lead + [q.dims[-2], v.dims[-1]])
