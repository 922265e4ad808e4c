"""HF transformers models from small configs: groups, export equivalence, cost, save/load, save_pretrained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import netdiet
from engine_checks import assert_unchanged, check_dense, check_keep, keep_settings, state_snapshot

transformers = pytest.importorskip("transformers")


def _ids(batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 100, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _bert() -> tuple[torch.nn.Module, dict, dict]:
    cfg = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=3,
    )
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, 5:] = 0
    alt = {"input_ids": _ids(3, 12, 1), "attention_mask": torch.ones(3, 12, dtype=torch.long)}
    return (
        transformers.BertForSequenceClassification(cfg),
        {"input_ids": _ids(2, 8), "attention_mask": mask},
        alt,
    )


def _gpt2() -> tuple[torch.nn.Module, dict, dict]:
    cfg = transformers.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32, use_cache=False
    )
    return transformers.GPT2LMHeadModel(cfg), {"input_ids": _ids(2, 8)}, {"input_ids": _ids(3, 13, 1)}


def _llama() -> tuple[torch.nn.Module, dict, dict]:
    cfg = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=64,
        use_cache=False,
    )
    return transformers.LlamaForCausalLM(cfg), {"input_ids": _ids(2, 8)}, {"input_ids": _ids(3, 13, 1)}


def _vit() -> tuple[torch.nn.Module, tuple, tuple]:
    cfg = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=5,
    )
    return (
        transformers.ViTForImageClassification(cfg),
        (torch.randn(2, 3, 16, 16),),
        (torch.randn(3, 3, 16, 16),),
    )


BUILDERS = {"bert": _bert, "gpt2": _gpt2, "llama": _llama, "vit": _vit}
# Expected groups per layer: (kind of the attention group, heads or kv heads per layer).
ATTENTION = {"bert": ("head", 4), "gpt2": ("head", 4), "llama": ("kv_head", 2), "vit": ("head", 4)}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_hf_model_groups_export_cost_and_save(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, inputs, alt = BUILDERS[name]()
    model.eval()
    snapshot = state_snapshot(model)
    space = netdiet.analyze(model, inputs)
    kinds = [g.kind for g in space.groups]
    assert kinds.count("hidden") == 1, "one residual stream, one hidden group"
    kind, per_layer = ATTENTION[name]
    attn = [g for g in space.groups if g.kind == kind]
    assert len(attn) == 2 and all(g.size == per_layer for g in attn)
    assert kinds.count("neuron") >= 2  # one MLP group per layer (plus BERT's pooler)
    # Vocabulary / class logits never shrink.
    assert all(g.size not in (100,) for g in space.groups)
    check_dense(space, model, inputs)
    for i, keep in enumerate(keep_settings(space)):
        slim = check_keep(space, keep, inputs, tmp_path / "netdiet" if i == 0 else None, alt_inputs=alt)
    slim.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file()
    assert_unchanged(model, snapshot)


def test_llama_gqa_keeps_ratio_and_updates_attributes() -> None:
    torch.manual_seed(0)
    model, inputs, alt = _llama()
    space = netdiet.analyze(model.eval(), inputs)
    kv = {g.name: g for g in space.groups if g.kind == "kv_head"}
    assert set(kv) == {f"model.layers.{i}.self_attn.kv_heads" for i in range(2)}
    assert all("4 query heads" in g.note for g in kv.values())
    assert not [g for g in space.groups if g.kind == "head"], "query heads move only with their kv head"
    # head_dim (8) is never a group; it shows up as excluded with its reason.
    assert any("head_dim" in r for e in space.excluded for r in e.reasons)
    # Uniform keep: one of two kv heads everywhere -> config describes the slim model exactly.
    keep = {name: torch.tensor([1]) for name in kv}
    keep["hidden"] = torch.arange(0, 64, 2)  # 32 is a multiple of the 4 query heads left
    slim = check_keep(space, keep, inputs, alt_inputs=alt)
    attn = slim.model.layers[0].self_attn
    assert (
        attn.q_proj.out_features == 4 * 8 and attn.k_proj.out_features == 8 and attn.v_proj.out_features == 8
    )
    assert attn.head_dim == 8 and attn.num_key_value_groups == 4
    assert slim.config.num_attention_heads == 4 and slim.config.num_key_value_heads == 1
    assert slim.config.hidden_size == 32 and slim.config.head_dim == 8
    # The kept kv head's query heads are q heads 4..7 of the original (kv head 1 x ratio 4).
    q_rows = model.model.layers[0].self_attn.q_proj.weight[32:64, ::2]
    assert torch.equal(attn.q_proj.weight, q_rows)
    # Non-uniform keep: layer 0 loses a kv head, layer 1 keeps both; each module knows its own counts.
    slim2 = check_keep(
        space, {"model.layers.0.self_attn.kv_heads": torch.tensor([0])}, inputs, alt_inputs=alt
    )
    assert slim2.model.layers[0].self_attn.num_key_value_groups == 4
    assert slim2.model.layers[0].self_attn.k_proj.out_features == 8
    assert slim2.model.layers[1].self_attn.k_proj.out_features == 16


def test_gpt2_tied_embedding_is_sliced_once_and_stays_tied(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, inputs, _ = _gpt2()
    space = netdiet.analyze(model.eval(), inputs)
    keep = {"hidden": torch.arange(0, 32, 2), "transformer.h.0.attn.heads": torch.tensor([0, 3])}
    slim = check_keep(space, keep, inputs, tmp_path)
    assert slim.lm_head.weight.data_ptr() == slim.transformer.wte.weight.data_ptr()
    assert slim.transformer.wte.weight.shape == (100, 16)
    assert slim.config.n_embd == 16
    assert slim.transformer.h[0].attn.num_heads == 2 and slim.transformer.h[0].attn.split_size == 16
    assert slim.transformer.h[1].attn.num_heads == 4
