"""Ops that carry the cost: linear, matmul family and convolution. Each records a CostTerm."""

from __future__ import annotations

from typing import Any

from torch import fx

from netdiet.graph.layout import Layout, Prod
from netdiet.graph.records import LayerShape, TensorValue
from netdiet.graph.rules_norm import unrepeated
from netdiet.graph.walker import Walker, op_name, rule


def _t(w: Walker, arg: Any) -> TensorValue:
    t = w.tensor(arg)
    assert t is not None, "expected a tensor argument"
    return t


@rule("aten.linear")
def linear(w: Walker, node: fx.Node) -> Any:
    x, weight = _t(w, node.args[0]), _t(w, node.args[1])
    bias = w.tensor(node.args[2]) if len(node.args) > 2 else None
    shape = w.out_shape()
    w.unify(x.dims[-1], weight.dims[1])
    if bias is not None:
        w.unify(bias.dims[0], weight.dims[0])
    w.tag(weight.dims[0], "linear_out")
    w.tag(weight.dims[1], "linear_in")
    w.role(weight, 0, "out")
    w.role(weight, 1, "in")
    lead = list(x.dims[:-1])
    w.add_cost("linear", lead + [weight.dims[1], weight.dims[0]], weight=weight.param)
    tokens = 1
    for s in x.shape[1:-1]:
        tokens *= int(s)
    w.add_layer_shape(
        LayerShape(
            layer=w.module_path() or "<top>",
            op="linear",
            weight=weight.param,
            in_layout=weight.dims[1],
            out_layout=weight.dims[0],
            in_channels=int(weight.shape[1]),
            out_channels=int(weight.shape[0]),
            tokens=tokens,
        )
    )
    return TensorValue(shape, lead + [weight.dims[0]])


@rule("aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm", "aten.matmul")
def matmul(w: Walker, node: fx.Node) -> Any:
    """a @ b: batch dims broadcast, contraction dims unify. Activation x activation contractions freeze."""
    name = op_name(node)
    offset = 1 if name in ("aten.addmm", "aten.baddbmm") else 0
    a, b = _t(w, node.args[offset]), _t(w, node.args[offset + 1])
    shape = w.out_shape()
    a_dims = list(a.dims) if len(a.shape) > 1 else [w.table.new(1)] + list(a.dims)
    b_dims = list(b.dims) if len(b.shape) > 1 else list(b.dims) + [w.table.new(1)]
    a_shape = a.shape if len(a.shape) > 1 else (1, *a.shape)
    b_shape = b.shape if len(b.shape) > 1 else (*b.shape, 1)
    k_a, k_b = a_dims[-1], b_dims[-2]
    w.unify(k_a, k_b)
    if a.param is None and b.param is None:
        w.freeze(k_a, "contracted between two activations (e.g. attention scores)")
        if len(a.shape) >= 4 and len(b.shape) >= 4 and a.shape[-3] == b.shape[-3] and a.shape[-3] > 1:
            # [B, H, L, D] @ [B, H, D, S]: attention written out (Swin, timm without SDPA). The first
            # such product in a module is q @ k^T: its head dim is the heads, its last dim head_dim.
            w.tag(a.dims[-3], "head")
            w.tag(b.dims[-3], "head")
            w.add_attention(a.dims[-3], unrepeated(w, b.dims[-3]), a.shape[-1], replace=False)
    m, n = a_dims[-2], b_dims[-1]
    if b.param is not None and len(b.shape) >= 2:
        w.tag(k_b, "linear_in")
        w.tag(n, "linear_out")
        w.role(b, -2, "in")
        w.role(b, -1, "out")
    if a.param is not None and len(a.shape) >= 2:
        w.tag(k_a, "linear_in")
        w.tag(m, "linear_out")
        w.role(a, -1, "in")
        w.role(a, -2, "out")
    batch_a, batch_b = a_dims[:-2], b_dims[:-2]
    sa, sb = a_shape[:-2], b_shape[:-2]
    nb = max(len(batch_a), len(batch_b))
    batch: list[Layout] = []
    for k in range(nb):
        ia, ib = k - (nb - len(batch_a)), k - (nb - len(batch_b))
        da = batch_a[ia] if ia >= 0 else None
        db = batch_b[ib] if ib >= 0 else None
        za = sa[ia] if ia >= 0 else 1
        zb = sb[ib] if ib >= 0 else 1
        if da is not None and db is not None and za == zb:
            w.unify(da, db)
            batch.append(da)
        elif da is not None and za >= zb:
            batch.append(da)
        elif db is not None:
            batch.append(db)
    out_dims: list[Layout] = batch + ([m] if len(a.shape) > 1 else []) + ([n] if len(b.shape) > 1 else [])
    if offset:
        bias = w.tensor(node.args[0])
        if bias is not None:
            for i in range(1, min(len(bias.shape), len(out_dims)) + 1):
                if bias.shape[-i] == shape[-i] and shape[-i] > 1:
                    w.unify(bias.dims[-i], out_dims[-i])
    weight = a.param or b.param
    w.add_cost(name.split(".")[-1], batch + [m, k_a, n], weight=weight)
    if len(out_dims) != len(shape):
        return w.fresh(shape, f"result of {w.where()}")
    return TensorValue(shape, out_dims)


@rule(
    "aten.conv1d",
    "aten.conv2d",
    "aten.conv3d",
    "aten.convolution",
    "aten._convolution",
    "aten.conv_transpose1d",
    "aten.conv_transpose2d",
    "aten.conv_transpose3d",
)
def convolution(w: Walker, node: fx.Node) -> Any:
    """Conv with `groups`: channels = Prod(G, per-group); the G atom ties input and output channels.

    Depthwise conv is the case per-group input == 1: input and output channels are one group.
    """
    name = op_name(node)
    x, weight = _t(w, node.args[0]), _t(w, node.args[1])
    bias = w.tensor(node.args[2]) if len(node.args) > 2 else None
    shape = w.out_shape()
    if name in ("aten.convolution", "aten._convolution"):
        transposed = bool(node.args[6])
        groups = int(node.args[8])
    else:
        transposed = "transpose" in name
        groups = int(node.args[6]) if len(node.args) > 6 else int(node.kwargs.get("groups", 1))
    g = w.table.new(groups)
    # weight: conv [out, in/g, k...]; transposed [in, out/g, k...]
    if transposed:
        c_in_full, per_group_out = weight.dims[0], weight.dims[1]
        out_ch = Prod((g, per_group_out))
        w.unify(x.dims[1], c_in_full)
        w.unify(c_in_full, Prod((g, w.table.new(weight.shape[0] // groups))))
    else:
        per_group_in = weight.dims[1]
        out_ch = weight.dims[0]
        w.unify(x.dims[1], Prod((g, per_group_in)))
        w.unify(out_ch, Prod((g, w.table.new(weight.shape[0] // groups))))
    if bias is not None:
        w.unify(bias.dims[0], out_ch)
    for d in list(weight.dims[:2]):
        w.tag(d, "conv")
    w.role(weight, 0, "in" if transposed else "out")
    w.role(weight, 1, "out" if transposed else "in")
    for k in range(2, len(weight.shape)):
        w.freeze(weight.dims[k], "convolution kernel size")
    w.tag(x.dims[1], "conv")
    spatial_out = [w.table.new(s, frozen=f"spatial size of {w.where()}") for s in shape[2:]]
    spatial_for_cost = x.dims[2:] if transposed else spatial_out
    w.add_cost("conv", [x.dims[0], *spatial_for_cost, *weight.dims], weight=weight.param)
    if weight.param is not None:
        w.add_groups(w.params[weight.param].module_path, g)
    w.add_layer_shape(_conv_shape(w, node, x, weight, out_ch, groups, transposed))
    return TensorValue(shape, [x.dims[0], out_ch, *spatial_out])


def _conv_shape(
    w: Walker,
    node: fx.Node,
    x: TensorValue,
    weight: TensorValue,
    out_ch: Layout,
    groups: int,
    transposed: bool,
) -> LayerShape:
    """Kernel, stride, padding and dilation as the call gives them (ATen schemas: conv{1,2,3}d and
    convolution share the positions of stride, padding and dilation)."""
    nd = len(weight.shape) - 2
    kernel = tuple(int(k) for k in weight.shape[2:])

    def per_dim(value: Any, default: int) -> tuple[int, ...]:
        if value is None:
            return (default,) * nd
        if isinstance(value, int):
            return (value,) * nd
        values = tuple(int(v) for v in value)
        return values * nd if len(values) == 1 else values

    args = list(node.args) + [None] * 6
    stride = per_dim(args[3], 1)
    dilation = per_dim(args[5], 1)
    if isinstance(args[4], str):  # conv2d.padding overload: "same" / "valid"
        padding = (
            tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel)) if args[4] == "same" else (0,) * nd
        )
    else:
        padding = per_dim(args[4], 0)
    c_in = int(x.shape[1])
    return LayerShape(
        layer=w.module_path() or "<top>",
        op="conv",
        weight=weight.param,
        in_layout=x.dims[1],
        out_layout=out_ch,
        in_channels=c_in,
        out_channels=int(weight.shape[1] * groups if transposed else weight.shape[0]),
        groups=groups,
        depthwise=groups > 1 and groups == c_in and not transposed and int(weight.shape[1]) == 1,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        in_spatial=tuple(int(s) for s in x.shape[2:]),
        transposed=transposed,
    )
