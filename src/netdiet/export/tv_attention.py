"""torchvision attention modules with a head size of their own, not the stream's.

torchvision's Swin computes `head_dim = C // num_heads` from the stream width C inside
`shifted_window_attention`, and MaxViT reshapes its heads back to the stream width D, so pruned heads or
stage widths cannot run their code. The exporter gives such a module a forward that computes the same
thing with the inner width read from its weights: for Swin (pad to whole windows, cyclic shift, window
partition, attention with the relative position bias and the shifted-window mask, cosine attention with
a logit scale for V2, reverse) and for MaxViT's relative-position attention. The module keeps its class,
parameters and buffers; only its forward is replaced.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import nn

SWIN_CLASSES = ("ShiftedWindowAttention", "ShiftedWindowAttentionV2")
MAXVIT_CLASSES = ("RelativePositionalMultiHeadAttention",)


def is_swin_attention(module: nn.Module) -> bool:
    return type(module).__name__ in SWIN_CLASSES and type(module).__module__.startswith("torchvision.")


def is_tv_attention(module: nn.Module) -> bool:
    """A torchvision attention whose code ties its head size to the stream (Swin, MaxViT)."""
    return type(module).__name__ in SWIN_CLASSES + MAXVIT_CLASSES and type(module).__module__.startswith(
        "torchvision."
    )


def _shift_mask(pad_h: int, pad_w: int, win: list[int], shift: list[int], like: torch.Tensor) -> torch.Tensor:
    """-100 between positions of a window that came from different regions before the cyclic shift."""
    region = like.new_zeros((pad_h, pad_w))
    label = 0
    for hs in ((0, -win[0]), (-win[0], -shift[0]), (-shift[0], None)):
        for ws in ((0, -win[1]), (-win[1], -shift[1]), (-shift[1], None)):
            region[hs[0] : hs[1], ws[0] : ws[1]] = label
            label += 1
    n_win = (pad_h // win[0]) * (pad_w // win[1])
    region = region.view(pad_h // win[0], win[0], pad_w // win[1], win[1]).permute(0, 2, 1, 3)
    region = region.reshape(n_win, win[0] * win[1])
    diff = region.unsqueeze(1) - region.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def _forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    win = [int(w) for w in self.window_size]  # type: ignore[union-attr]
    shift = [int(s) for s in self.shift_size]  # type: ignore[union-attr]
    heads = int(self.num_heads)  # type: ignore[arg-type]
    qkv_layer, proj = self.qkv, self.proj
    assert isinstance(qkv_layer, nn.Linear) and isinstance(proj, nn.Linear)
    head_dim = qkv_layer.out_features // (3 * heads)
    inner = heads * head_dim
    b, h, w, c = x.shape
    pad_w, pad_h = (win[1] - w % win[1]) % win[1], (win[0] - h % win[0]) % win[0]
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    ph, pw = x.shape[1], x.shape[2]
    if win[0] >= ph:
        shift[0] = 0
    if win[1] >= pw:
        shift[1] = 0
    shifted = sum(shift) > 0
    if shifted:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    n_win = (ph // win[0]) * (pw // win[1])
    tokens = win[0] * win[1]
    x = x.view(b, ph // win[0], win[0], pw // win[1], win[1], c).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b * n_win, tokens, c)
    logit_scale = getattr(self, "logit_scale", None)
    bias: torch.Tensor | None = qkv_layer.bias
    if logit_scale is not None and bias is not None:  # V2: no key bias
        bias = torch.cat([bias[:inner], torch.zeros_like(bias[inner : 2 * inner]), bias[2 * inner :]])
    qkv = F.linear(x, qkv_layer.weight, bias).reshape(b * n_win, tokens, 3, heads, head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * head_dim**-0.5) @ k.transpose(-2, -1)
    attn = attn + self.get_relative_position_bias()  # type: ignore[operator]
    if shifted:
        mask = _shift_mask(ph, pw, win, shift, x)
        attn = attn.view(b, n_win, heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, tokens, tokens)
    attn = F.dropout(attn.softmax(dim=-1), p=float(self.attention_dropout), training=self.training)  # type: ignore[arg-type]
    x = (attn @ v).transpose(1, 2).reshape(b * n_win, tokens, inner)
    x = F.dropout(proj(x), p=float(self.dropout), training=self.training)  # type: ignore[arg-type]
    c_out = x.shape[-1]
    x = x.view(b, ph // win[0], pw // win[1], win[0], win[1], c_out).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, ph, pw, c_out)
    if shifted:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :h, :w, :].contiguous()


def _maxvit_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    b, g, p, _ = x.shape
    head_dim = int(self.head_dim)  # type: ignore[arg-type]
    to_qkv = self.to_qkv
    assert isinstance(to_qkv, nn.Linear)
    heads = to_qkv.out_features // (3 * head_dim)  # the einsum attention records no head count
    q, k, v = torch.chunk(to_qkv(x), 3, dim=-1)
    q, k, v = (t.reshape(b, g, p, heads, head_dim).permute(0, 1, 3, 2, 4) for t in (q, k, v))
    k = k * float(self.scale_factor)  # type: ignore[arg-type]
    scores = torch.einsum("bghid,bghjd->bghij", q, k) + self.get_relative_positional_bias()  # type: ignore[operator]
    out = torch.einsum("bghij,bghjd->bghid", F.softmax(scores, dim=-1), v)
    return self.merge(out.permute(0, 1, 3, 2, 4).reshape(b, g, p, heads * head_dim))  # type: ignore[operator]


def free_head_dim(module: nn.Module) -> None:
    """Give a torchvision Swin or MaxViT attention module the forward whose head size is its own."""
    forward = _maxvit_forward if type(module).__name__ in MAXVIT_CLASSES else _forward
    module.forward = types.MethodType(forward, module)  # type: ignore[method-assign]
