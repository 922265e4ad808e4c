"""A generator of random architectures for the fuzz suite: each seed builds one model and its input.

Two families share one block vocabulary each. Images: plain/strided conv, residual (identity or projected,
inline or a droppable module), concat, split, depthwise, grouped, squeeze-excitation, shared (one module
applied twice), GroupNorm, max/avg pooling, a 1x1 conv as einsum, a spatial roll, then either global
pooling or flatten -> linear. Sequences: embedding or linear input, pre-norm (LayerNorm or RMS) blocks
(modules, so droppable) of attention with grouped-query kv heads through SDPA or written out, MLPs (GELU
or gated), shared attention, concat of two projections, then mean pooling or first token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_BLOCKS = (
    "conv",
    "strided",
    "residual",
    "projected",
    "concat",
    "split",
    "depthwise",
    "grouped",
    "se",
    "shared",
    "groupnorm",
    "maxpool",
    "avgpool",
)
SEQUENCE_BLOCKS = ("attention", "manual_attention", "mlp", "gated_mlp", "shared", "concat")


@dataclass
class Case:
    seed: int
    family: str
    spec: list[tuple[str, int]]
    model: nn.Module
    inputs: Any
    alt_inputs: Any


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class ResBlock(nn.Module):
    """A residual block as a module of its own (droppable: a depth knob)."""

    def __init__(self, c: int, width: int) -> None:
        super().__init__()
        self.a, self.bn, self.b = (
            nn.Conv2d(c, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.Conv2d(width, c, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b(F.relu(self.bn(self.a(x)))))


class ImageNet(nn.Module):
    def __init__(self, spec: list[tuple[str, int]], head: str, bn_stem: bool) -> None:
        super().__init__()
        self.spec, self.head_kind = [k for k, _ in spec], head
        c = 8
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=not bn_stem)
        self.stem_bn = nn.BatchNorm2d(c) if bn_stem else nn.Identity()
        self.blocks = nn.ModuleList()
        spatial = 8
        for kind, width in spec:
            m = nn.Module()
            if kind == "conv":
                m.conv, m.bn = nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width)
                c = width
            elif kind == "strided":
                m.conv = nn.Conv2d(c, width, 3, stride=2, padding=1)
                c, spatial = width, (spatial + 1) // 2
            elif kind == "residual":
                m.a, m.bn, m.b = (
                    nn.Conv2d(c, width, 3, padding=1),
                    nn.BatchNorm2d(width),
                    nn.Conv2d(width, c, 1),
                )
            elif kind == "projected":
                m.a, m.b, m.short = (
                    nn.Conv2d(c, width, 3, padding=1),
                    nn.Conv2d(width, width, 1),
                    nn.Conv2d(c, width, 1),
                )
                c = width
            elif kind == "concat":
                m.a, m.b = nn.Conv2d(c, width, 1), nn.Conv2d(c, width + 2, 3, padding=1)
                c = 2 * width + 2
            elif kind == "split":
                m.conv = nn.Conv2d(c, 2 * width, 1)
                m.post = nn.Conv2d(width, width, 3, padding=1)
                c = 2 * width
            elif kind == "depthwise":
                m.dw, m.pw = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, width, 1)
                c = width
            elif kind == "grouped":
                g = 2
                m.pre = nn.Conv2d(c, g * width, 1)
                m.conv = nn.Conv2d(g * width, g * width, 3, padding=1, groups=g)
                c = g * width
            elif kind == "se":
                m.fc1, m.fc2 = nn.Conv2d(c, max(2, width // 2), 1), nn.Conv2d(max(2, width // 2), c, 1)
            elif kind == "shared":
                m.conv = nn.Conv2d(c, c, 3, padding=1)
            elif kind == "groupnorm":
                m.conv = nn.Conv2d(c, 2 * width, 1)
                m.norm = nn.GroupNorm(2, 2 * width)
                c = 2 * width
            elif kind == "einsum":  # a 1x1 conv written as einsum over a weight
                m.weight = nn.Parameter(torch.randn(width, c) / c**0.5)
                c = width
            elif kind == "resblock":
                m = ResBlock(c, width)
            self.blocks.append(m)
        self.spatial = spatial
        self.fc = nn.Linear(c * spatial * spatial if head == "flatten" else c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        for kind, m in zip(self.spec, self.blocks):
            if kind == "conv":
                x = F.relu(m.bn(m.conv(x)))
            elif kind == "strided":
                x = F.gelu(m.conv(x))
            elif kind == "residual":
                x = x + m.b(F.relu(m.bn(m.a(x))))
            elif kind == "projected":
                x = F.relu(m.b(F.relu(m.a(x))) + m.short(x))
            elif kind == "concat":
                x = torch.cat([F.relu(m.a(x)), torch.sigmoid(m.b(x))], dim=1)
            elif kind == "split":
                p, q = m.conv(x).chunk(2, dim=1)
                x = torch.cat([F.relu(m.post(p)), q], dim=1)
            elif kind == "depthwise":
                x = F.relu6(m.pw(F.relu(m.dw(x))))
            elif kind == "grouped":
                x = F.relu(m.conv(F.relu(m.pre(x))))
            elif kind == "se":
                x = x * torch.sigmoid(m.fc2(F.relu(m.fc1(F.adaptive_avg_pool2d(x, 1)))))
            elif kind == "shared":
                x = F.relu(m.conv(F.relu(m.conv(x))))
            elif kind == "groupnorm":
                x = F.silu(m.norm(m.conv(x)))
            elif kind == "einsum":
                x = F.relu(torch.einsum("bchw,dc->bdhw", x, m.weight))
            elif kind == "roll":
                x = torch.roll(x, shifts=(1, -1), dims=(2, 3))
            elif kind == "resblock":
                x = m(x)
            elif kind == "maxpool":
                x = F.max_pool2d(x, 3, stride=1, padding=1)
            elif kind == "avgpool":
                x = F.avg_pool2d(x, 3, stride=1, padding=1)
        if self.head_kind == "flatten":
            return self.fc(x.flatten(1))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, sdpa: bool) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim, self.sdpa = heads, kv_heads, head_dim, sdpa
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(dim, kv_heads * head_dim)
        self.o = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        rep = self.num_heads // self.num_kv_heads
        if rep > 1:
            k = (
                k[:, :, None]
                .expand(b, self.num_kv_heads, rep, n, self.head_dim)
                .reshape(b, -1, n, self.head_dim)
            )
            v = (
                v[:, :, None]
                .expand(b, self.num_kv_heads, rep, n, self.head_dim)
                .reshape(b, -1, n, self.head_dim)
            )
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = (q @ k.transpose(-2, -1) / self.head_dim**0.5).softmax(-1) @ v
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


class SeqBlock(nn.Module):
    """One pre-norm sequence block of a kind; a module of its own, so most are droppable (depth knobs)."""

    def __init__(self, kind: str, d: int, width: int, rng: random.Random, norm: Any) -> None:
        super().__init__()
        self.kind = kind
        self.norm = norm(d)
        if kind in ("attention", "manual_attention", "shared"):
            kv = rng.choice([1, 2])
            heads = kv * rng.choice([1, 2])
            self.attn = Attention(d, heads, kv, rng.choice([2, 4]), sdpa=kind != "manual_attention")
        elif kind == "mlp":
            self.fc1, self.fc2 = nn.Linear(d, width), nn.Linear(width, d)
        elif kind == "gated_mlp":
            self.gate, self.up = nn.Linear(d, width, bias=False), nn.Linear(d, width, bias=False)
            self.down = nn.Linear(width, d)
        elif kind == "concat":
            self.a, self.b = nn.Linear(d, width), nn.Linear(d, width + 1)
            self.merge = nn.Linear(2 * width + 1, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind in ("attention", "manual_attention"):
            return h + self.attn(self.norm(h))
        if self.kind == "shared":  # the same attention twice
            h = h + self.attn(self.norm(h))
            return h + self.attn(self.norm(h))
        y = self.norm(h)
        if self.kind == "mlp":
            return h + self.fc2(F.gelu(self.fc1(y)))
        if self.kind == "gated_mlp":
            return h + self.down(F.silu(self.gate(y)) * self.up(y))
        return h + self.merge(torch.cat([F.relu(self.a(y)), torch.tanh(self.b(y))], dim=-1))


class SequenceNet(nn.Module):
    def __init__(self, spec: list[tuple[str, int]], rng: random.Random, tokens: bool) -> None:
        super().__init__()
        self.tokens = tokens
        d = 8 * rng.randint(1, 3)
        self.inp = nn.Embedding(30, d) if tokens else nn.Linear(6, d)
        norm = nn.LayerNorm if rng.random() < 0.5 else RMSNorm
        self.blocks = nn.ModuleList([SeqBlock(kind, d, width, rng, norm) for kind, width in spec])
        self.first_token = rng.random() < 0.5
        self.out = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.out(h[:, 0] if self.first_token else h.mean(1))


def build(seed: int) -> Case:
    """The model of one seed: an image net for even seeds, a sequence net for odd ones."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    if seed % 2 == 0:
        spec = [(rng.choice(IMAGE_BLOCKS), rng.randint(2, 9)) for _ in range(rng.randint(1, 5))]
        head = rng.choice(["pool", "flatten"])
        model = ImageNet(spec, head, bn_stem=rng.random() < 0.5).eval()
        x = torch.randn(2, 3, 8, 8)
        alt = torch.randn(3, 3, 8, 8) if head == "flatten" else torch.randn(3, 3, 11, 7)
        return Case(seed, "image", spec, model, x, alt)
    spec = [(rng.choice(SEQUENCE_BLOCKS), rng.randint(3, 17)) for _ in range(rng.randint(1, 4))]
    tokens = rng.random() < 0.5
    model = SequenceNet(spec, rng, tokens).eval()
    if tokens:
        x, alt = torch.randint(0, 30, (2, 5)), torch.randint(0, 30, (3, 7))
    else:
        x, alt = torch.randn(2, 5, 6), torch.randn(3, 7, 6)
    return Case(seed, "sequence", spec, model, x, alt)
