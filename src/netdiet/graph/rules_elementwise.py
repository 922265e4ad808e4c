"""Elementwise ops: broadcasting ties equal-sized aligned dimensions, and nothing else."""

from __future__ import annotations

from typing import Any

from torch import fx

from netdiet.graph.layout import Layout
from netdiet.graph.records import TensorValue
from netdiet.graph.walker import Walker, rule

UNARY_AND_BINARY = (
    "add sub mul div rsub true_divide floor_divide remainder fmod where maximum minimum pow "
    "relu relu6 hardtanh gelu silu sigmoid tanh hardswish hardsigmoid leaky_relu elu selu celu softplus mish "
    "prelu exp expm1 log log1p log2 sqrt rsqrt neg abs clamp clamp_min clamp_max clip dropout alias clone "
    "contiguous detach to _to_copy type_as masked_fill eq ne lt le gt ge logical_and logical_or logical_not "
    "logical_xor __and__ __or__ __xor__ bitwise_and bitwise_or bitwise_not bitwise_xor round floor ceil trunc "
    "sign erf erfc sin cos reciprocal square lerp addcmul addcdiv fill zeros_like ones_like empty_like "
    "full_like rand_like randn_like isnan isinf nan_to_num fake_quantize_per_tensor_affine "
    "frac sgn copy lift_fresh_copy bernoulli hardshrink softshrink threshold logit heaviside zero"
).split()


def broadcast(w: Walker, node: fx.Node, tensors: list[TensorValue], shape: tuple[int, ...]) -> TensorValue:
    """Output dim k takes the layout of every input dim aligned with it (from the right) at full size."""
    dims: list[Layout | None] = [None] * len(shape)
    for t in tensors:
        offset = len(shape) - len(t.shape)
        for i, size in enumerate(t.shape):
            k = i + offset
            if k < 0:
                continue
            if size == shape[k] and size > 1:
                current = dims[k]
                if current is None:
                    dims[k] = t.dims[i]
                else:
                    w.unify(current, t.dims[i])
    out: list[Layout] = []
    for k, d in enumerate(dims):
        out.append(
            d if d is not None else w.table.new(shape[k], frozen=f"created by broadcasting at {w.where()}")
        )
    param = next((t.param for t in tensors if t.param is not None and t.shape == shape), None)
    return TensorValue(shape, out, param if len(tensors) == 1 else None)


@rule(*(f"aten.{n}" for n in UNARY_AND_BINARY))
def elementwise(w: Walker, node: fx.Node) -> Any:
    tensors = [
        t for t in (w.tensor(a) for a in list(node.args) + list(node.kwargs.values())) if t is not None
    ]
    meta = node.meta["val"]
    if isinstance(meta, (tuple, list)):  # native_dropout-style (out, mask)
        shape = tuple(int(s) for s in meta[0].shape)
        out = broadcast(w, node, tensors, shape)
        return tuple(out for _ in meta)
    shape = w.out_shape()
    if not tensors:
        return w.fresh(shape, f"created by {w.where()}")
    return broadcast(w, node, tensors, shape)


@rule("aten.native_dropout")
def native_dropout(w: Walker, node: fx.Node) -> Any:
    return elementwise(w, node)


@rule("aten.fake_quantize_per_channel_affine")
def fake_quant_per_channel(w: Walker, node: fx.Node) -> Any:
    """Per-channel quantiser parameters follow the quantised axis, so wrapping changes no group."""
    x = w.tensor(node.args[0])
    assert x is not None
    axis = int(node.args[3]) % len(x.shape)
    for arg in node.args[1:3]:
        t = w.tensor(arg)
        if t is not None and len(t.shape) == 1:
            w.unify(t.dims[0], x.dims[axis])
    return TensorValue(x.shape, list(x.dims), x.param)


FACTORIES = (
    "zeros ones full empty arange scalar_tensor tensor rand randn randint linspace new_zeros new_ones "
    "new_full new_empty new_tensor eye tril_indices triu_indices empty_strided ones_like_"
).split()


# Head-count attributes the exporter rewrites (export/adapters.py uses the same names).
HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads")


@rule(*(f"aten.{n}" for n in FACTORIES))
def factory(w: Walker, node: fx.Node) -> Any:
    """Tensors built from constant sizes: their dims cannot follow a pruned group, so they are frozen.

    Except a dim whose size is the head count of the module that builds it (T5's cross-attention makes
    its zero position bias with `self.n_heads`): the exporter rewrites that attribute, so the dim may
    follow the heads it meets; the export probe confirms it does.
    """
    shape = w.out_shape()
    path = w.module_path()
    heads: set[int] = set()
    if path and not w.excluded(path):
        try:
            module = w.model.get_submodule(path)
        except AttributeError:
            module = None
        heads = {v for a in HEAD_ATTRS if isinstance(v := getattr(module, a, None), int) and v > 1}
    reason = f"size fixed in code by {w.where()}"
    return TensorValue(shape, [w.table.new(s, frozen=None if s in heads else reason) for s in shape])
