"""A small BERT-style encoder classifier (post-LN, GELU MLP, tanh pooler on token 0).

Written out rather than imported from transformers so the attention module has the exact shape the
pruner expects: separate q/k/v Linears and a head count read from tensor shapes (`view(..., -1, head_dim)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from netdiet.zoo._config import require_positive


@dataclass
class BertConfig:
    """Sizes of the encoder; `hidden` must be divisible by `heads`."""

    vocab_size: int = 8192
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 512
    max_len: int = 128
    num_classes: int = 2
    type_vocab_size: int = 2
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        require_positive(
            "BertConfig",
            vocab_size=self.vocab_size,
            hidden=self.hidden,
            layers=self.layers,
            heads=self.heads,
            intermediate=self.intermediate,
            max_len=self.max_len,
            num_classes=self.num_classes,
            type_vocab_size=self.type_vocab_size,
            layer_norm_eps=self.layer_norm_eps,
        )
        if self.hidden % self.heads != 0:
            raise ValueError(f"BertConfig.hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BertConfig.dropout must be in [0, 1), got {self.dropout}")


class BertSelfAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections and an additive key-padding mask."""

    def __init__(self, hidden: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, hidden)
        self.dropout_p = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.query(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        k = self.key(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        v = self.value(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.output(out.transpose(1, 2).reshape(B, T, -1))


class BertLayer(nn.Module):
    """Post-LN block as in BERT: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertSelfAttention(config.hidden, config.heads, config.dropout)
        self.attn_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(config.hidden, config.intermediate)
        self.out = nn.Linear(config.intermediate, config.hidden)
        self.out_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attention(x, mask)))
        h = self.out(F.gelu(self.intermediate(x)))
        return self.out_norm(x + self.dropout(h))


class BertClassifier(nn.Module):
    """Embeddings -> encoder layers -> tanh pooler on token 0 -> Linear classifier."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embeddings = nn.Embedding(config.vocab_size, config.hidden)
        self.position_embeddings = nn.Embedding(config.max_len, config.hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden)
        self.embed_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([BertLayer(config) for _ in range(config.layers)])
        self.pooler = nn.Linear(config.hidden, config.hidden)
        self.classifier_dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden, config.num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`attention_mask` is (B, T) with 1 for real tokens and 0 for padding; returns (B, classes) logits."""
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device).unsqueeze(0)
        x = self.token_embeddings(input_ids) + self.position_embeddings(positions)
        if token_type_ids is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        else:
            x = x + self.token_type_embeddings.weight[0]
        x = self.embed_dropout(self.embed_norm(x))
        mask = None
        if attention_mask is not None:
            # Additive mask (0 keep, large negative drop): a boolean mask gives NaN on all-padding rows.
            keep = attention_mask[:, None, None, :].to(x.dtype)
            mask = (1.0 - keep) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return self.classifier(self.classifier_dropout(pooled))


def build_bert(config: BertConfig) -> BertClassifier:
    """Builder used by the zoo registry."""
    return BertClassifier(config)
