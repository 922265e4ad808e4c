"""Every zoo model builds, runs, exports with torch.export (non-strict) and has the expected size."""

from __future__ import annotations

import pytest
import torch

from netdiet import zoo

ALL = zoo.names()
# Small overrides keep the export test fast on 2 CPU cores while exercising the same code paths.
SMALL = {
    "resnet20": {},
    "resnet56": {},
    "vgg": {"layers": (8, "M", 16, "M", 16, "M", 32, "M"), "hidden": 16},
    "mobilenetv2": {"width_mult": 0.25},
    "vit": {"depth": 2, "dim": 32},
    "bert": {"vocab_size": 100, "hidden": 32, "intermediate": 64},
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_names_cover_all_families() -> None:
    assert ALL == sorted(["bert", "mobilenetv2", "resnet20", "resnet56", "vgg", "vit"])


@pytest.mark.parametrize("name", ALL)
def test_default_model_runs_with_right_output_shape(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.build(name).eval()
    inputs = zoo.example_inputs(name, batch_size=3)
    out = model(*inputs)
    assert out.shape == (3, zoo.entry(name).num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_model_exports_non_strict_and_matches_eager(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.build(name, **SMALL[name]).eval()
    inputs = zoo.example_inputs(name, **SMALL[name])
    ep = torch.export.export(model, inputs, strict=False)
    torch.testing.assert_close(ep.module()(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)


def test_resnet_parameter_counts_match_the_paper() -> None:
    assert 0.26e6 < n_params(zoo.build("resnet20")) < 0.28e6
    assert 0.84e6 < n_params(zoo.build("resnet56")) < 0.87e6


def test_resnet_shortcuts_are_identity_unless_shape_changes() -> None:
    model = zoo.build("resnet20")
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3) for b in stage]
    projecting = [b for b in blocks if not isinstance(b.shortcut, torch.nn.Identity)]
    assert len(blocks) == 9
    assert len(projecting) == 2  # first block of stage 2 and of stage 3


def test_vgg_flattens_a_c_by_2_by_2_map() -> None:
    model = zoo.build("vgg")
    assert model.fc1.in_features == 512 * 2 * 2


def test_mobilenetv2_width_mult_scales_widths() -> None:
    full = zoo.build("mobilenetv2")
    half = zoo.build("mobilenetv2", width_mult=0.5)
    assert n_params(half) < 0.5 * n_params(full)
    assert full.last_channels == 1280


def test_attention_modules_keep_head_attributes() -> None:
    vit = zoo.build("vit")
    attn = vit.blocks[0].attn
    assert (attn.num_heads, attn.head_dim) == (4, 32)
    bert = zoo.build("bert")
    assert (bert.layers[0].attention.num_heads, bert.layers[0].attention.head_dim) == (4, 32)


def test_attention_head_count_comes_from_weight_shapes() -> None:
    """Halving the heads by slicing weights must work without touching forward (what a pruner does)."""
    torch.manual_seed(0)
    vit = zoo.build("vit", depth=1).eval()
    attn = vit.blocks[0].attn
    d, hd = 128, attn.head_dim
    keep = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in (0, 2)])
    rows = torch.cat([keep, keep + d, keep + 2 * d])
    new_qkv = torch.nn.Linear(d, 3 * len(keep))
    new_qkv.weight.data, new_qkv.bias.data = attn.qkv.weight.data[rows], attn.qkv.bias.data[rows]
    new_proj = torch.nn.Linear(len(keep), d)
    new_proj.weight.data, new_proj.bias.data = attn.proj.weight.data[:, keep], attn.proj.bias.data
    attn.qkv, attn.proj, attn.num_heads = new_qkv, new_proj, 2
    out = vit(*zoo.example_inputs("vit"))
    assert out.shape == (2, 10)


def test_bert_padding_mask_hides_padded_tokens() -> None:
    torch.manual_seed(0)
    model = zoo.build("bert", vocab_size=50, dropout=0.0).eval()
    ids = torch.randint(0, 50, (1, 10))
    mask = torch.ones(1, 10, dtype=torch.long)
    mask[0, 6:] = 0
    other = ids.clone()
    other[0, 6:] = (ids[0, 6:] + 1) % 50  # change only padded tokens
    torch.testing.assert_close(model(ids, mask), model(other, mask))
    assert not torch.allclose(model(ids), model(other))


def test_build_overrides_reach_the_config() -> None:
    model = zoo.build("vit", depth=2)
    assert len(model.blocks) == 2
    assert zoo.config_of("vit") is zoo.ViTConfig


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="resnet20"):
        zoo.build("resnet18")


def test_unknown_field_lists_valid_fields() -> None:
    with pytest.raises(ValueError, match="depth"):
        zoo.build("vit", dept=2)


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("resnet20", {"depth": 21}, "6n\\+2"),
        ("vit", {"dim": 130}, "divisible"),
        ("bert", {"hidden": 0}, "hidden"),
        ("vgg", {"layers": ("M",) * 6 + (8,)}, "max-pools"),
        ("mobilenetv2", {"width_mult": -1.0}, "width_mult"),
    ],
)
def test_invalid_config_values_are_rejected(name: str, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        zoo.build(name, **overrides)


def test_entries_record_input_kind() -> None:
    assert zoo.entry("bert").input_kind == "tokens"
    assert {zoo.entry(n).input_kind for n in ALL if n != "bert"} == {"image"}
