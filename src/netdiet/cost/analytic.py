"""Exact analytic cost of any keep-setting: FLOPs, params, weight bytes and bit-operations.

Conventions (the same as torch.utils.flop_counter.FlopCounterMode, so the two agree):
- a multiply-add counts 2 FLOPs; counted ops are convolutions, linear/matmul/bmm and attention's two
  matrix products (q k^T and attn v);
- not counted: elementwise ops, activations, normalisation, softmax, pooling and bias adds (they are
  memory-bound, fold into neighbours at deployment, and FlopCounterMode ignores them too);
- FlopCounterMode on CPU does not see fused scaled_dot_product_attention kernels; netdiet counts
  them as the math path does (2*B*H*L*S*E + 2*B*H*L*S*Ev), which FlopCounterMode reports when SDPA is
  forced to the math backend;
- BOPs = MACs * weight bits * activation bits (32 x 32 unless bit widths are given);
- params count parameters only (not buffers), each tied tensor once.

Every function here takes counts that may be ints, floats or torch tensors: the same code is the exact
cost of a hard keep-setting and the differentiable surrogate at relaxed counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from netdiet.cost.blocks import block_factor
from netdiet.cost.latency.model import LatencyModel
from netdiet.space import Space


@dataclass
class LayerCost:
    name: str
    op: str
    flops: Any = 0
    params: Any = 0
    weight_bytes: Any = 0
    bops: Any = 0

    def to_dict(self) -> dict:
        return {k: _num(v) if k not in ("name", "op") else v for k, v in self.__dict__.items()}


@dataclass
class CostReport:
    flops: Any
    params: Any
    weight_bytes: Any
    bops: Any
    layers: list[LayerCost] = field(default_factory=list)
    latency_ms: Any = None  # predicted by a LatencyModel, when one is given

    def to_dict(self) -> dict:
        return {
            "flops": _num(self.flops),
            "params": _num(self.params),
            "weight_bytes": _num(self.weight_bytes),
            "bops": _num(self.bops),
            **({"latency_ms": _num(self.latency_ms)} if self.latency_ms is not None else {}),
            "convention": "FLOPs: multiply-add = 2; conv/linear/matmul/attention products only",
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def ratio_to(self, other: CostReport) -> dict[str, float]:
        keys = ["flops", "params", "weight_bytes", "bops"]
        if self.latency_ms is not None and other.latency_ms is not None:
            keys.append("latency_ms")
        return {k: float(_num(getattr(self, k))) / max(float(_num(getattr(other, k))), 1e-12) for k in keys}


def _num(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return float(v.detach()) if v.numel() == 1 else v.detach().tolist()
    return v


def cost(
    space: Space,
    keep: Mapping[str, Any] | None = None,
    *,
    weight_bits: Mapping[str, Any] | None = None,
    act_bits: Mapping[str, Any] | None = None,
    ranks: Mapping[str, Any] | None = None,
    per_layer: bool = True,
    latency: LatencyModel | None = None,
    blocks: Mapping[str, Any] | None = None,
) -> CostReport:
    """Cost of `keep` (indices, or per-group counts which may be relaxed floats/tensors) on `space`.

    `weight_bits` maps parameter names to bits (default: the dtype's size); `act_bits` maps layer names
    to activation bits for BOPs (default 32); either may be relaxed (floats or tensors) for surrogates. `ranks` maps weight names to a rank r (int, float or
    tensor): the layer is costed as the cheaper of dense and factorized, W[out, rest] = U[out, r] V[r, rest],
    because a factorization is only exported where it lowers the cost.
    `blocks` maps droppable module paths to 1 (kept), 0 (dropped: every op and parameter inside costs
    nothing) or a relaxed value in between (the block's cost scales with it).
    `latency`: a LatencyModel of this space; the report then carries its predicted `latency_ms` (the
    latency tables time dense layers, so `ranks` do not change it; bits do: a layer whose weight and input
    are both <= 8 bits is priced from the table's int8 timings).
    """
    if keep is not None and any(not _is_count(v) for v in keep.values()):
        keep = space.validate(keep)
    counts = space.counts(keep)
    analysis = space.analysis
    layers: dict[str, LayerCost] = {}
    total_flops: Any = 0
    total_bops: Any = 0
    for term in analysis.cost_terms:
        macs: Any = term.coeff * block_factor(term.layer, blocks)
        for layout in term.layouts:
            macs = macs * space.dim_size(layout, counts)
        if ranks and term.weight is not None and term.weight in ranks:
            macs = macs * _rank_factor(space, term.weight, counts, ranks[term.weight])
        w_bits = _weight_bits(space, term.weight, weight_bits) if term.weight else 32
        a_bits = (act_bits or {}).get(term.layer, 32)
        flops = 2 * macs
        bops = macs * w_bits * a_bits
        total_flops = total_flops + flops
        total_bops = total_bops + bops
        if per_layer:
            entry = layers.setdefault(term.layer, LayerCost(term.layer, term.op))
            if entry.op != term.op and term.op not in entry.op.split("+"):
                entry.op = f"{entry.op}+{term.op}"
            entry.flops = entry.flops + flops
            entry.bops = entry.bops + bops
    total_params: Any = 0
    total_bytes: Any = 0
    counted: set[str] = set()
    for name, info in analysis.params.items():
        if info.is_buffer or name in counted:
            continue
        counted.update(analysis.param_aliases.get(name, [name]))
        n: Any = block_factor(info.module_path, blocks)
        for layout in info.dims:
            n = n * space.dim_size(layout, counts)
        if ranks and name in ranks:
            n = n * _rank_factor(space, name, counts, ranks[name])
        nbytes = n * _weight_bits(space, name, weight_bits) / 8
        total_params = total_params + n
        total_bytes = total_bytes + nbytes
        if per_layer:
            entry = layers.setdefault(
                info.module_path or "<top>", LayerCost(info.module_path or "<top>", "params")
            )
            entry.params = entry.params + n
            entry.weight_bytes = entry.weight_bytes + nbytes
    latency_ms = None
    if latency is not None:
        latency_ms = latency.predict(counts, layer_bits(latency, weight_bits, act_bits), blocks=blocks)
    return CostReport(total_flops, total_params, total_bytes, total_bops, list(layers.values()), latency_ms)


def layer_bits(
    latency: LatencyModel, weight_bits: Mapping[str, Any] | None, act_bits: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Effective bits per timed layer: the larger of its weight and input bits (a layer runs int8 kernels
    only when both are <= 8); layers neither names are left out (fp32)."""
    if not weight_bits and not act_bits:
        return None
    out: dict[str, Any] = {}
    for need in latency.needs:
        w = (weight_bits or {}).get(need.shape.weight) if need.shape.weight else None
        a = (act_bits or {}).get(need.shape.layer)
        if w is None and a is None:
            continue
        w = 32 if w is None else w
        a = 32 if a is None else a
        if isinstance(w, torch.Tensor) or isinstance(a, torch.Tensor):
            out[need.shape.layer] = torch.maximum(
                torch.as_tensor(w, dtype=torch.float32), torch.as_tensor(a, dtype=torch.float32)
            )
        else:
            out[need.shape.layer] = max(w, a)
    return out


def _rank_factor(space: Space, weight: str, counts: Mapping[int, Any], rank: Any) -> Any:
    """min(dense, factorized) / dense for a weight [out, rest...] at rank `rank`."""
    info = space.analysis.params[weight]
    out_dim = space.out_dim(weight)
    out: Any = space.dim_size(info.dims[out_dim], counts)
    rest: Any = 1
    for d, layout in enumerate(info.dims):
        if d != out_dim:
            rest = rest * space.dim_size(layout, counts)
    factor = rank * (out + rest) / (out * rest)
    if isinstance(factor, torch.Tensor):
        return torch.clamp(factor, max=1.0)
    return min(factor, 1.0)


def _is_count(v: Any) -> bool:
    return isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.dim() == 0)


def _weight_bits(space: Space, param: str, bits: Mapping[str, Any] | None) -> Any:
    if bits and param in bits:
        value = bits[param]
        return value if isinstance(value, (float, torch.Tensor)) else int(value)
    tensor = _lookup(space, param)
    return tensor.element_size() * 8 if tensor is not None else 32


def _lookup(space: Space, name: str) -> torch.Tensor | None:
    cache = space.__dict__.setdefault("_tensor_cache", None)
    if cache is None:
        cache = dict(space.model.named_parameters(remove_duplicate=False))
        cache.update(dict(space.model.named_buffers(remove_duplicate=False)))
        space.__dict__["_tensor_cache"] = cache
    return cache.get(name)
