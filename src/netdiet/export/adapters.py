"""Update module attributes after slicing, so the slim model runs at other input sizes and saves cleanly.

Sizes come from the new weights where a weight says it all (Linear, Conv, BatchNorm, Embedding) and
from the graph's records where it does not (conv `groups`, GroupNorm groups, attention head counts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from netdiet.graph.rules_elementwise import HEAD_ATTRS

KV_HEAD_ATTRS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
ALL_HEAD_ATTRS = ("all_head_size", "split_size", "inner_dim", "attn_dim")


def update_module(module: Any, groups: int | None) -> None:
    """Standard torch layers: attribute = what the sliced weight now says."""
    if isinstance(module, nn.modules.conv._ConvNd):
        g = groups if groups is not None else module.groups
        module.groups = g
        w = module.weight
        if module.transposed:
            module.in_channels, module.out_channels = w.shape[0], w.shape[1] * g
        else:
            module.out_channels, module.in_channels = w.shape[0], w.shape[1] * g
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        ref = module.weight if module.weight is not None else module.running_mean
        if ref is not None:
            module.num_features = ref.shape[0]
    elif isinstance(module, nn.GroupNorm):
        if groups is not None:
            module.num_groups = groups
        if module.weight is not None:
            module.num_channels = module.weight.shape[0]
    elif isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = module.weight.shape
    elif type(module).__name__ == "Conv1D" and hasattr(module, "nf") and module.weight.dim() == 2:
        module.nx, module.nf = module.weight.shape  # HF GPT-2's transposed linear
    elif isinstance(module, nn.MultiheadAttention):
        embed = module.in_proj_weight.shape[1] if module.in_proj_weight is not None else module.embed_dim
        module.embed_dim = module.kdim = module.vdim = embed
        module.num_heads = embed // module.head_dim


def update_norm(module: Any, size: int) -> None:
    """LayerNorm/RMSNorm-like modules: their normalised size, whatever the class calls it."""
    if hasattr(module, "normalized_shape"):
        module.normalized_shape = (int(size),)
    for attr in ("hidden_size", "dim"):
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, int(size))


HIDDEN_ATTRS = ("hidden_dim", "hidden_size", "embed_dim", "d_model")


def update_hidden_size(model: nn.Module, old: int, new: int) -> None:
    """Custom modules that keep the residual-stream width as an attribute (torchvision's ViT reshapes
    with `self.hidden_dim`). Only attributes that held the old width change; the export check catches
    any that meant something else."""
    if old == new:
        return
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.Embedding)):
            continue
        for attr in HIDDEN_ATTRS:
            if getattr(module, attr, None) == old and isinstance(getattr(module, attr), int):
                setattr(module, attr, int(new))


def update_attention(module: Any, q_heads: int, kv_heads: int, head_dim: int) -> None:
    """Head-count attributes of attention modules (torch, HF BERT/ViT/GPT-2/Llama and look-alikes)."""
    if isinstance(module, nn.MultiheadAttention):
        return
    for attr in HEAD_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, q_heads)
    for attr in KV_HEAD_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, kv_heads)
    if isinstance(getattr(module, "num_key_value_groups", None), int) and kv_heads:
        module.num_key_value_groups = q_heads // kv_heads
    for attr in ALL_HEAD_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, q_heads * head_dim)


def update_hf_config(model: nn.Module, facts: Mapping[str, Any]) -> None:
    """Keep an HF config truthful where the slim model is uniform (same width in every layer).

    Non-uniform widths cannot be described by one HF config; the recipe records them and
    `netdiet.load` rebuilds the model from it.
    """
    config: Any = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return
    setters: dict[str, Callable[[], Any]] = {
        "hidden_size": lambda: facts.get("hidden"),
        "n_embd": lambda: facts.get("hidden"),
        "d_model": lambda: facts.get("hidden"),
        "num_attention_heads": lambda: facts.get("heads"),
        "n_head": lambda: facts.get("heads"),
        "num_key_value_heads": lambda: facts.get("kv_heads"),
        "intermediate_size": lambda: facts.get("intermediate"),
        "n_inner": lambda: facts.get("intermediate"),
    }
    before: dict[str, Any] = {}
    for attr, get in setters.items():
        value = get()
        if (
            value is not None
            and hasattr(config, attr)
            and (getattr(config, attr) is not None or attr == "n_inner")
        ):
            before[attr] = getattr(config, attr)
            setattr(config, attr, int(value))
    if facts.get("heads") and facts.get("head_dim") and hasattr(config, "head_dim"):
        before["head_dim"] = config.head_dim
        config.head_dim = int(facts["head_dim"])
    if not _config_valid(config):
        # Some configs insist on hidden_size % num_attention_heads == 0 even with an explicit head_dim
        # (Llama in transformers 5). Such a slim model is not describable by its config class; keep the
        # original widths there so save_pretrained still works (the modules carry the real sizes and
        # netdiet.load rebuilds from the recipe).
        for attr in ("hidden_size", "n_embd", "d_model"):
            if attr in before:
                setattr(config, attr, before.pop(attr))
        if not _config_valid(config):
            for attr, value in before.items():
                setattr(config, attr, value)


def _config_valid(config: Any) -> bool:
    validate = getattr(config, "validate", None)
    if not callable(validate):
        return True
    try:
        validate()
    except Exception:
        return False
    return True
