"""nn.MultiheadAttention with fewer heads than its embedding has room for.

torch's module insists that the query/key/value width equals the stream width (heads x head_dim ==
embed_dim), so pruning heads, or the stream, of a ViT built on it cannot be expressed by that class.
The slim module keeps its parameter names and call signature (so recipes, state dicts and callers stay
the same) and computes what nn.MultiheadAttention computes with the kept heads.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def replaceable(module: nn.MultiheadAttention) -> bool:
    """Only the packed-projection form without extra key/value biases or zero-attention slots."""
    return (
        module.in_proj_weight is not None
        and module.bias_k is None
        and module.bias_v is None
        and not module.add_zero_attn
    )


class SlimMultiheadAttention(nn.Module):
    """Packed q/k/v projection to `num_heads * head_dim`, attention, output projection to the stream."""

    def __init__(self, source: nn.MultiheadAttention, num_heads: int, head_dim: int) -> None:
        super().__init__()
        if not replaceable(source):
            raise ValueError("SlimMultiheadAttention replaces only packed-projection nn.MultiheadAttention")
        self.num_heads = int(num_heads)
        self.head_dim = int(head_dim)
        self.batch_first = source.batch_first
        self.dropout = float(source.dropout)
        self.in_proj_weight = source.in_proj_weight
        self.in_proj_bias = source.in_proj_bias
        self.out_proj = source.out_proj
        self.embed_dim = int(self.in_proj_weight.shape[1])
        if self.in_proj_weight.shape[0] != 3 * self.num_heads * self.head_dim:
            raise ValueError(
                f"in_proj_weight has {self.in_proj_weight.shape[0]} rows, expected 3 x {self.num_heads} heads "
                f"x {self.head_dim}"
            )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        # (L, B, E) from here, as nn.MultiheadAttention computes.
        tgt, bsz, _ = query.shape
        src = key.shape[0]
        inner = self.num_heads * self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.split(inner)
        b = self.in_proj_bias.split(inner) if self.in_proj_bias is not None else (None, None, None)
        q = F.linear(query, w_q, b[0]).reshape(tgt, bsz, self.num_heads, self.head_dim).permute(1, 2, 0, 3)
        k = F.linear(key, w_k, b[1]).reshape(src, bsz, self.num_heads, self.head_dim).permute(1, 2, 0, 3)
        v = F.linear(value, w_v, b[2]).reshape(src, bsz, self.num_heads, self.head_dim).permute(1, 2, 0, 3)
        mask = self._mask(attn_mask, key_padding_mask, bsz, tgt, src, q.dtype, is_causal)
        dropout = self.dropout if self.training else 0.0
        weights: torch.Tensor | None = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores + mask
            probs = scores.softmax(dim=-1)
            out = F.dropout(probs, p=dropout, training=self.training) @ v
            weights = probs.mean(dim=1) if average_attn_weights else probs
            if unbatched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = out.permute(2, 0, 1, 3).reshape(tgt, bsz, inner)
        out = self.out_proj(out)
        if unbatched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _mask(
        self,
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        bsz: int,
        tgt: int,
        src: int,
        dtype: torch.dtype,
        is_causal: bool,
    ) -> torch.Tensor | None:
        """One additive float mask of shape (B, H, L, S): True in a boolean mask means "do not attend"."""

        def additive(m: torch.Tensor) -> torch.Tensor:
            if m.dtype == torch.bool:
                return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
            return m.to(dtype)

        out: torch.Tensor | None = None
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(tgt, src, dtype=torch.bool, device=self.in_proj_weight.device).triu(1)
        if attn_mask is not None:
            m = additive(attn_mask)
            if m.dim() == 2:
                m = m.view(1, 1, tgt, src)
            else:  # (B * H, L, S)
                m = m.view(bsz, self.num_heads, tgt, src)
            out = m
        if key_padding_mask is not None:
            p = additive(key_padding_mask).view(bsz, 1, 1, src)
            out = p if out is None else out + p
        return out
