"""SlimMultiheadAttention computes what nn.MultiheadAttention computes, and holds fewer heads than E."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netdiet
from engine_checks import check_dense, check_keep
from netdiet.export.attention import SlimMultiheadAttention


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_same_outputs_as_torch_at_full_size(batch_first: bool, need_weights: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, batch_first=batch_first).eval()
    slim = SlimMultiheadAttention(mha, 3, 4).eval()
    shape = (2, 5, 12) if batch_first else (5, 2, 12)
    q = torch.randn(shape)
    kv = torch.randn((2, 7, 12) if batch_first else (7, 2, 12))
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, -2:] = True
    causal = torch.ones(5, 7, dtype=torch.bool).triu(3)
    for kwargs in (
        {},
        {"key_padding_mask": pad},
        {"attn_mask": causal},
        {"attn_mask": causal.float() * -2.0},
    ):
        a, wa = mha(q, kv, kv, need_weights=need_weights, **kwargs)
        b, wb = slim(q, kv, kv, need_weights=need_weights, **kwargs)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        if need_weights:
            torch.testing.assert_close(wb, wa, rtol=1e-5, atol=1e-6)
        else:
            assert wa is None and wb is None


def test_unbatched_input() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2).eval()
    slim = SlimMultiheadAttention(mha, 2, 4)
    x = torch.randn(6, 8)
    torch.testing.assert_close(slim(x, x, x)[0], mha(x, x, x)[0], rtol=1e-5, atol=1e-6)


class Encoder(nn.Module):
    """A ViT-like pre-norm encoder on nn.MultiheadAttention (as torchvision's ViT builds it)."""

    def __init__(self, dim: int = 16, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(6, dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(layers)])
        self.attn = nn.ModuleList(
            [nn.MultiheadAttention(dim, heads, batch_first=True) for _ in range(layers)]
        )
        self.mlp = nn.ModuleList(
            [
                nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 32), nn.GELU(), nn.Linear(32, dim))
                for _ in range(layers)
            ]
        )
        self.out = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for norm, attn, mlp in zip(self.norms, self.attn, self.mlp):
            y = norm(h)
            h = h + attn(y, y, y, need_weights=False)[0]
            h = h + mlp(h)
        return self.out(h[:, 0])


def test_heads_and_the_stream_of_an_mha_encoder_prune_independently() -> None:
    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randn(2, 5, 6)
    space = netdiet.analyze(model, x)
    kinds = sorted(g.kind for g in space.groups)
    assert kinds == ["head", "head", "hidden", "neuron", "neuron"], [(g.name, g.kind) for g in space.groups]
    check_dense(space, model, x)
    heads = [g for g in space.groups if g.kind == "head"]
    hidden = next(g for g in space.groups if g.kind == "hidden")
    keep = {
        heads[0].name: torch.tensor([1, 3]),
        heads[1].name: torch.tensor([0, 1, 2]),
        hidden.name: torch.arange(10),
    }
    slim = check_keep(space, keep, x, alt_inputs=torch.randn(3, 9, 6))
    assert isinstance(slim.attn[0], SlimMultiheadAttention) and slim.attn[0].num_heads == 2
    assert slim.attn[1].num_heads == 3 and slim.attn[1].embed_dim == 10
    assert tuple(slim.attn[0].in_proj_weight.shape) == (3 * 2 * 4, 10)


def test_mha_with_its_default_need_weights_keeps_heads_whole_and_says_why() -> None:
    """need_weights=True computes the head-averaged attention weights (even if the caller drops them):
    that mean mixes the heads, so they stay whole, the stream still prunes, and the reason is shown.
    Call it with need_weights=False (as torchvision's ViT does) to prune heads."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.out = nn.Linear(6, 16), nn.Linear(16, 2)
            self.mha = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            y, _weights = self.mha(h, h, h)
            return self.out((h + y).mean(1))

    torch.manual_seed(0)
    x = torch.randn(2, 5, 6)
    space = netdiet.analyze(Net().eval(), x)
    assert not [g for g in space.groups if g.kind == "head"]
    assert any("reduced by aten.mean" in r for e in space.excluded if e.size == 4 for r in e.reasons)
    stream = next(g for g in space.groups if g.size == 16)
    slim = check_keep(space, {stream.name: torch.arange(10)}, x)
    assert isinstance(slim.mha, SlimMultiheadAttention) and slim.mha.embed_dim == 10
