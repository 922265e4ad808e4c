"""einsum by its subscripts: a letter shared by operands ties their dims; a letter kept in the output
carries its layout there; a contracted letter is a layer's input where a weight holds it (prunable) and
an activation x activation contraction (frozen) otherwise.

FLOPs are 2 x the product of every letter that survives the per-operand sums, which is what
FlopCounterMode counts for the two-operand bmm einsum lowers to. Einsums of three or more operands
lower along a contraction path netdiet does not model, so they get no rule (a clear refusal where they
touch a prunable dim).
"""

from __future__ import annotations

import string
from typing import Any

from torch import fx

from netdiet.graph.layout import Layout
from netdiet.graph.records import TensorValue
from netdiet.graph.walker import Walker, rule


def _expand(term: str, rank: int, ellipsis_letters: str) -> str:
    if "..." not in term:
        return term
    n = rank - (len(term) - 3)
    return term.replace("...", ellipsis_letters[len(ellipsis_letters) - n :] if n > 0 else "")


def parse(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Operand subscripts and output subscripts with any ellipsis spelled out as spare letters."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    used = set(eq)
    spare = "".join(c for c in string.ascii_uppercase + string.ascii_lowercase if c not in used)
    longest = max((r - (len(t) - 3) for t, r in zip(terms, ranks) if "..." in t), default=0)
    ell = spare[:longest]
    ops = [_expand(t, r, ell) for t, r in zip(terms, ranks)]
    if arrow:
        out = rhs.replace("...", ell)
    else:  # implicit output: ellipsis letters, then letters used once, alphabetically
        counts: dict[str, int] = {}
        for t in ops:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    return ops, out


@rule("aten.einsum")
def einsum(w: Walker, node: fx.Node) -> Any:
    equation = str(node.args[0])
    args: Any = node.args[1]
    tensors = [w.tensor(a) for a in args]
    if len(tensors) > 2 or any(t is None for t in tensors):
        return w._opaque(node, "aten.einsum")
    operands = [t for t in tensors if t is not None]
    shape = w.out_shape()
    ops, out = parse(equation, [len(t.shape) for t in operands])
    layout: dict[str, Layout] = {}
    size: dict[str, int] = {}
    for t, sub in zip(operands, ops):
        for c, d, s in zip(sub, t.dims, t.shape):
            if c in layout and s == size[c] and s > 1:
                w.unify(layout[c], d)
            elif c not in layout or (size[c] == 1 and s > 1):
                layout[c], size[c] = d, s
    in_all = [c for c in layout if all(c in sub for sub in ops)] if len(ops) == 2 else []
    contracted = [c for c in in_all if c not in out]
    for sub in ops:  # a letter summed inside one operand mixes its units
        for c in sub:
            if c not in out and c not in in_all and size[c] > 1:
                w.freeze(layout[c], "summed by einsum")
    params = [t for t in operands if t.param is not None]
    for c in contracted:
        if not params:
            w.freeze(layout[c], "contracted between two activations (e.g. attention scores)")
        else:
            w.tag(layout[c], "linear_in")
    for t, sub in zip(operands, ops):
        if t.param is None:
            continue
        for i, c in enumerate(sub):
            if c in contracted:
                w.role(t, i, "in")
            elif c in out:
                w.role(t, i, "out")
                w.tag(layout[c], "linear_out")
    if len(operands) == 2 and not params and contracted and len(ops[0]) >= 4:
        # q . k over head_dim, per head (MaxViT's "bghid,bghjd->bghij"): the heads letter sits third from
        # the end of the query, is shared by both operands and kept; recorded like SDPA's heads
        h = ops[0][-3]
        if h in in_all and h in out and size[h] > 1 and ops[0][-1] in contracted:
            w.tag(layout[h], "head")
            w.add_attention(layout[h], layout[h], size[ops[0][-1]], replace=False)
    if len(operands) == 2:
        letters = [c for c in layout if c in out or c in in_all]
        weight = params[0].param if params else None
        w.add_cost("einsum", [layout[c] for c in letters], weight=weight)
    dims = [layout[c] for c in out]
    if [w.table.size(d) for d in dims] != list(shape):
        return w.fresh(shape, f"result of {w.where()}")
    return TensorValue(shape, dims)
