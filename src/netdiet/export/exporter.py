"""Make a keep-setting real: the masked reference and the physically smaller model, checked equal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from netdiet import __version__
from netdiet.export.adapters import (
    update_attention,
    update_hf_config,
    update_hidden_size,
    update_module,
    update_norm,
)
from netdiet.export.attention import SlimMultiheadAttention, replaceable
from netdiet.export.masked_norm import MaskedLastDimNorm
from netdiet.export.slicing import copy_model, slice_tensors, zero_dropped
from netdiet.export.tv_attention import free_head_dim, is_tv_attention
from netdiet.export.verify import verify
from netdiet.space import Space

RECIPE_ATTR = "netdiet_recipe"


def _submodule(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = _submodule(model, parent_path)
    setattr(parent, name, new)


def shrink(space: Space, keep: Mapping[str, Any], model: nn.Module) -> nn.Module:
    """Slice `model` (a copy of the analysed model, or something with the same structure) in place."""
    valid = space.validate(keep)
    kept = space.kept_positions(valid)
    analysis = space.analysis
    counts = space.counts(valid)
    slice_tensors(model, kept, analysis.param_aliases)
    group_counts = {path: int(space.dim_size(rec.groups, counts)) for path, rec in analysis.groups.items()}
    for path, module in model.named_modules():
        update_module(module, group_counts.get(path))
    for path, norm in analysis.norms.items():
        update_norm(_submodule(model, path), int(space.dim_size(norm.layout, counts)))
    heads: set[int] = set()
    kv_heads: set[int] = set()
    for path, att in analysis.attentions.items():
        q = int(space.dim_size(att.q_heads, counts))
        kv = int(space.dim_size(att.kv_heads, counts))
        heads.add(q)
        kv_heads.add(kv)
        update_attention(_submodule(model, path), q, kv, att.head_dim)
    _replace_resized_mha(model)
    for module in model.modules():
        if is_tv_attention(module):  # torchvision ties head size to the stream: give it its own
            free_head_dim(module)
    hidden = [g for g in space.groups if g.kind == "hidden"]
    if len(hidden) == 1 and getattr(model, "config", None) is None:
        update_hidden_size(model, hidden[0].size, int(counts.get(hidden[0].atom, hidden[0].size)))
    update_hf_config(model, _uniform_facts(space, counts, heads, kv_heads))
    setattr(model, RECIPE_ATTR, make_recipe(space, valid))
    return model


def _replace_resized_mha(model: nn.Module) -> None:
    """nn.MultiheadAttention cannot hold fewer heads than its stream width: swap in the slim module."""
    for path, module in list(model.named_modules()):
        if not isinstance(module, nn.MultiheadAttention) or not replaceable(module):
            continue
        w = module.in_proj_weight
        if tuple(w.shape) == (3 * module.embed_dim, module.embed_dim) and (
            module.out_proj.weight.shape == (module.embed_dim, module.embed_dim)
        ):
            continue
        # head_dim is kept whole by the graph, so the kept heads follow from the sliced projection
        # (MHA with need_weights=True runs no SDPA, so there may be no attention record to ask)
        heads = int(w.shape[0]) // (3 * module.head_dim)
        _set_submodule(model, path, SlimMultiheadAttention(module, heads, module.head_dim))


def export_model(
    space: Space,
    keep: Mapping[str, Any],
    *,
    verify: bool = True,
    rtol: float = 1e-5,
    source: nn.Module | None = None,
) -> nn.Module:
    """A new, smaller nn.Module; by default checked against `mask_model` on random inputs.

    `source` supplies the weights (a trained copy with the analysed model's structure); default: the
    analysed model itself. Neither is modified.
    """
    base = space.model if source is None else source
    slim = shrink(space, keep, copy_model(base))
    if verify and not _on_meta(base):
        reference = mask_model(space, keep, source=base)
        verify_equal(reference, slim, space, rtol=rtol)
    return slim


def verify_equal(reference: nn.Module, slim: nn.Module, space: Space, *, rtol: float = 1e-5) -> float:
    return verify(reference, slim, space.example_inputs, rtol=rtol)


def mask_model(space: Space, keep: Mapping[str, Any], *, source: nn.Module | None = None) -> nn.Module:
    """A copy of the original with dropped units zeroed: the reference every export is checked against.

    Zeroing alone is not enough where statistics span the pruned dimension (LayerNorm, RMSNorm over a
    pruned hidden size): those modules are wrapped so their statistics cover only the kept units.
    """
    valid = space.validate(keep)
    kept = space.kept_positions(valid)
    counts = space.counts(valid)
    base = space.model if source is None else source
    masked = copy_model(base)
    zero_dropped(masked, kept)
    table = space.analysis.table
    from netdiet.space import positions
    from netdiet.space.keep import kept_by_atom

    by_atom = kept_by_atom(valid, space.groups)
    for path, rec in space.analysis.norms.items():
        size = table.size(rec.layout)
        if int(space.dim_size(rec.layout, counts)) == size:
            continue
        idx = positions(table, rec.layout, by_atom)
        inner = copy_model(_submodule(base, path))
        local = {
            f"{name}": [idx] + [None] * (p.dim() - 1)
            for name, p in inner.named_parameters()
            if p.dim() >= 1 and p.shape[0] == size
        }
        slice_tensors(inner, local, {})
        update_norm(inner, idx.numel())
        _set_submodule(masked, path, MaskedLastDimNorm(inner, idx, size, _normalized_input_dim(space, rec)))
    return masked


def _normalized_input_dim(space: Space, rec: Any) -> int:
    """Which dimension of the norm module's input is normalised (the last, unless the module permutes)."""
    if not rec.input_dims:
        return -1
    table = space.analysis.table
    target = table.resolve(rec.layout)
    matches = [i for i, d in enumerate(rec.input_dims) if table.resolve(d) == target]
    return matches[0] if len(matches) == 1 else -1


def _on_meta(model: nn.Module) -> bool:
    return any(p.device.type == "meta" for p in model.parameters())


def _uniform_facts(
    space: Space, counts: Mapping[int, Any], heads: set[int], kv_heads: set[int]
) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    hidden = [g for g in space.groups if g.kind == "hidden"]
    if len(hidden) == 1:
        facts["hidden"] = int(counts.get(hidden[0].atom, hidden[0].size))
    if len(heads) == 1:
        facts["heads"] = heads.pop()
    if len(kv_heads) == 1:
        facts["kv_heads"] = kv_heads.pop()
    config = getattr(space.model, "config", None)
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    n_embd = getattr(config, "n_embd", None)
    if inter is None and hasattr(config, "n_inner") and isinstance(n_embd, int):
        inter = 4 * n_embd  # GPT-2: n_inner=None means 4 * n_embd
    if isinstance(inter, int):
        widths = {
            int(space.dim_size(info.dims[0], counts))
            for info in space.analysis.params.values()
            if info.attr == "weight"
            and len(info.shape) == 2
            and info.shape[0] == inter
            and "mlp" in info.module_path
            or (
                info.attr == "weight"
                and len(info.shape) == 2
                and info.shape[0] == inter
                and "intermediate" in info.module_path
            )
        }
        if len(widths) == 1:
            facts["intermediate"] = widths.pop()
    return facts


def make_recipe(space: Space, keep: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The JSON-able description of an export: enough, with the base model, to rebuild it."""
    from netdiet.export.recipe import describe_inputs, fingerprint

    return {
        "format": "netdiet.recipe/1",
        "netdiet_version": __version__,
        "base_model": f"{type(space.model).__module__}.{type(space.model).__qualname__}",
        "base_fingerprint": fingerprint(space.model),
        "example_inputs": describe_inputs(space.example_inputs),
        "exclude": list(space.exclude),
        "keep": {
            name: [int(i) for i in idx] for name, idx in keep.items() if idx.numel() != space.group(name).size
        },
    }
