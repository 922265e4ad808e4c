"""torchvision Swin attention with its own head size: equal to torchvision's at full size, and what
lets Swin's heads and stage widths prune (torchvision derives head_dim from the stream width)."""

from __future__ import annotations

import copy

import pytest
import torch

import netdiet
from engine_checks import check_keep
from netdiet.export.tv_attention import free_head_dim, is_swin_attention

torchvision = pytest.importorskip("torchvision")


@pytest.mark.parametrize("name", ["swin_t", "swin_v2_t"])
@pytest.mark.parametrize("size", [64, 72])  # 72: padded to whole windows, shifted windows masked
def test_the_forward_equals_torchvisions_at_full_size(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, size, size)
    twin = copy.deepcopy(model)
    swapped = [m for m in twin.modules() if is_swin_attention(m)]
    assert len(swapped) == 12
    for m in swapped:
        free_head_dim(m)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-6, atol=1e-6)


def test_swin_heads_and_stage_widths_prune_and_export() -> None:
    torch.manual_seed(0)
    model = torchvision.models.swin_t(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    space = netdiet.analyze(model, x)
    kinds = {g.kind for g in space.groups}
    assert {"head", "neuron", "hidden"} <= kinds and space.probe.frozen == {}
    # every stage's width, although the 16x16 stage is padded to whole 7x7 windows (the padded spatial
    # dims cannot be aligned with the windows; that freezes them, not the channels beside them)
    assert sum(g.kind == "hidden" for g in space.groups) == 4
    heads = [g for g in space.groups if g.kind == "head"]
    assert len(heads) == 12 and heads[0].name == "features.1.0.attn.heads"
    keep = {heads[0].name: torch.tensor([0, 2]), heads[-1].name: torch.arange(0, 24, 2)}
    slim = check_keep(space, keep, x, alt_inputs=torch.randn(2, 3, 72, 72))
    assert slim.features[1][0].attn.num_heads == 2
    assert tuple(slim.features[1][0].attn.relative_position_bias_table.shape) == (169, 2)


def _small_maxvit() -> torch.nn.Module:
    from torchvision.models.maxvit import MaxVit

    return MaxVit(
        input_size=(64, 64),
        stem_channels=16,
        partition_size=4,
        block_channels=[16, 32],
        block_layers=[1, 1],
        head_dim=8,
        stochastic_depth_prob=0.0,
        num_classes=5,
    ).eval()


def test_maxvit_attention_equals_torchvisions_and_its_heads_prune() -> None:
    torch.manual_seed(0)
    model = _small_maxvit()
    x = torch.randn(1, 3, 64, 64)
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if type(m).__name__ == "RelativePositionalMultiHeadAttention":
            free_head_dim(m)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-6, atol=1e-6)
    space = netdiet.analyze(model, x)
    heads = [g for g in space.groups if g.kind == "head"]
    assert len(heads) == 4 and space.probe.frozen == {}
    slim = check_keep(space, {heads[0].name: torch.tensor([1])}, x)
    attn = slim.blocks[0].layers[0].layers.window_attention.attn_layer[1]
    assert attn.to_qkv.out_features == 3 * 8 and tuple(attn.relative_position_bias_table.shape)[1] == 1


def test_swin_v2_heads_prune_through_its_rebuilt_qkv_bias_and_cosine_attention() -> None:
    """V2 clones its packed qkv bias and zeroes the key part in place, and normalises q and k: the graph
    ties the three parts of the bias to the heads, and the heads prune."""
    torch.manual_seed(0)
    model = torchvision.models.swin_v2_t(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    space = netdiet.analyze(model, x)
    heads = [g for g in space.groups if g.kind == "head"]
    assert len(heads) == 12 and space.probe.frozen == {}
    members = {f"{m.param}:{m.dim}" for m in heads[0].members}
    assert {"features.1.0.attn.qkv.bias:0", "features.1.0.attn.logit_scale:0"} <= members
    slim = check_keep(space, {heads[0].name: torch.tensor([1, 2])}, x)
    attn = slim.features[1][0].attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 3 * 2 * 32
