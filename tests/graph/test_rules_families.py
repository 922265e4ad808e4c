"""Rules for the ops vision transformers, Swin and T5 use on prunable dims, each checked by export."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import netdiet
from engine_checks import check_dense, check_keep
from netdiet.graph.rules_einsum import parse


def _space(model: nn.Module, x: torch.Tensor) -> netdiet.Space:
    torch.manual_seed(0)
    model.eval()
    space = netdiet.analyze(model, x)
    check_dense(space, model, x)
    for seed in range(2):
        check_keep(space, space.sample(seed=seed), x)
    return space


def test_einsum_subscripts_parse_with_ellipsis_and_implicit_output() -> None:
    assert parse("...d,de->...e", [3, 2]) == (["ABd", "de"], "ABe")
    assert parse("ij,jk", [2, 2]) == (["ij", "jk"], "ik")
    assert parse("b h q d, b h k d -> b h q k", [4, 4]) == (["bhqd", "bhkd"], "bhqk")


class EinsumMixer(nn.Module):
    """A weight contracted by einsum is a layer (prunable); attention by einsum keeps head_dim whole."""

    def __init__(self) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.randn(8, 24) / 3)
        self.w_out = nn.Parameter(torch.randn(24, 8) / 5)
        self.q, self.k, self.v = nn.Linear(8, 12), nn.Linear(8, 12), nn.Linear(8, 12)
        self.o = nn.Linear(12, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h = F.gelu(torch.einsum("bnd,df->bnf", x, self.w_in))
        x = x + torch.einsum("...f,fd->...d", h, self.w_out)
        q, k, v = (p(x).view(b, n, -1, 4) for p in (self.q, self.k, self.v))
        att = torch.einsum("bqhd,bkhd->bhqk", q, k).div(2.0).softmax(-1)
        y = torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, n, -1)
        return self.head((x + self.o(y)).mean(1))


def test_einsum_layers_and_attention() -> None:
    space = _space(EinsumMixer(), torch.randn(2, 5, 8))
    by_kind = {(g.kind, g.size) for g in space.groups}
    assert ("neuron", 24) in by_kind  # the einsum MLP's inner width
    # Heads through the einsum attention: q, k and v projections shrink together, by whole heads.
    heads = next(g for g in space.groups if g.size == 3)
    assert {"q.weight", "k.weight", "v.weight", "o.weight"} <= {m.param for m in heads.members}
    assert any("summed" in r or "contracted" in r for e in space.excluded for r in e.reasons)


class WindowAttention(nn.Module):
    """Swin-style: roll, window partition, a relative position bias gathered per head, inverse."""

    def __init__(self, dim: int = 12, heads: int = 3, window: int = 2) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.window = heads, dim // heads, window
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        n = window * window
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads))
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer(
            "index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten(), persistent=False
        )
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        x = torch.roll(x, shifts=(-1, -1), dims=(1, 2))
        win = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, self.n, c)
        qkv = (
            self.qkv(win)
            .reshape(win.shape[0], self.n, 3, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv.unbind(0)
        bias = self.table[self.index].view(self.n, self.n, -1).permute(2, 0, 1).unsqueeze(0)
        att = (q @ k.transpose(-2, -1) / self.head_dim**0.5 + bias).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(win.shape[0], self.n, self.num_heads * self.head_dim)
        y = self.proj(y).view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return torch.roll(y, shifts=(1, 1), dims=(1, 2)).flip(2)


class SwinLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 12, 2, stride=2)
        self.norm = nn.LayerNorm(12)
        self.attn = WindowAttention()
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).permute(0, 2, 3, 1)
        h = h + self.attn(self.norm(h))
        return self.head(h.mean((1, 2)))


def test_roll_window_partition_and_relative_position_bias_keep_heads_prunable() -> None:
    space = _space(SwinLike(), torch.randn(2, 3, 8, 8))
    heads = [g for g in space.groups if g.kind == "head"]
    assert len(heads) == 1 and heads[0].size == 3
    assert "attn.table:1" in [f"{m.param}:{m.dim}" for m in heads[0].members]
    assert any(g.kind == "hidden" and g.size == 12 for g in space.groups)
    slim = check_keep(space, {heads[0].name: torch.tensor([0, 2])}, torch.randn(2, 3, 8, 8))
    assert tuple(slim.attn.table.shape) == (9, 2) and slim.attn.num_heads == 2
    assert heads[0].name == "attn.heads"


class T5Norm(nn.Module):
    """T5's layer norm: root mean square, a weight and no bias, no mean subtraction."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim) + 0.1 * torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + 1e-6))


class CrossBlock(nn.Module):
    """Decoder block: self-attention with a per-head position bias (as SDPA's mask), cross attention
    over the encoder stream whose zero bias is built with `self.n_heads`, a bias-free norm."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.n_heads = heads
        self.norm = T5Norm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.cq, self.ck, self.cv, self.co = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.rel = nn.Embedding(8, heads)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], -1, 4).transpose(1, 2)

    def forward(self, x: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        pos = torch.arange(n)
        bucket = (pos[None, :] - pos[:, None]).clamp(-4, 3) + 4
        bias = self.rel(bucket).permute(2, 0, 1).unsqueeze(0)
        h = self.norm(x)
        q, k, v = self._split(self.q(h)), self._split(self.k(h)), self._split(self.v(h))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.o(y.transpose(1, 2).reshape(x.shape[0], n, -1))
        h = self.norm(x)
        zero = torch.zeros(1, self.n_heads, n, enc.shape[1])
        q, k, v = self._split(self.cq(h)), self._split(self.ck(enc)), self._split(self.cv(enc))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=zero)
        return x + self.co(y.transpose(1, 2).reshape(x.shape[0], n, -1))


class EncDec(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(6, 16)
        self.dec_in = nn.Linear(6, 16)
        self.block = CrossBlock()
        self.head = nn.Linear(16, 3)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.dec_in(tgt), F.relu(self.enc(src))))


def test_cross_attention_per_head_bias_and_bias_free_norm() -> None:
    torch.manual_seed(0)
    model = EncDec().eval()
    x = (torch.randn(2, 7, 6), torch.randn(2, 5, 6))
    space = netdiet.analyze(model, x)
    check_dense(space, model, x)
    heads = sorted((g for g in space.groups if g.kind == "head"), key=lambda g: g.name)
    assert len(heads) == 2, [(g.name, g.kind) for g in space.groups]
    members = {g.name: {m.param for m in g.members} for g in heads}
    cross = next(n for n, m in members.items() if "block.ck.weight" in m)
    assert {"block.cq.weight", "block.cv.weight", "block.co.weight"} <= members[cross]
    selfatt = next(n for n in members if n != cross)
    assert "block.rel.weight" in members[selfatt]
    keep = {cross: torch.tensor([1, 2]), selfatt: torch.tensor([0, 3, 2])}
    slim = check_keep(space, keep, x)
    assert slim.block.n_heads == 2 or slim.block.n_heads == 3  # one attribute, two attentions
    # The encoder stream (keys/values' input) and the decoder stream are separate prunable groups.
    assert any("enc.weight:0" in [f"{m.param}:{m.dim}" for m in g.members] for g in space.groups)
    for seed in range(2):
        check_keep(space, space.sample(seed=seed), x)
