"""A norm over the last dimension whose statistics cover only the kept units (the masked reference)."""

from __future__ import annotations

import torch
from torch import nn


class MaskedLastDimNorm(nn.Module):
    """Apply a sliced copy of the norm to the kept positions and write zeros elsewhere.

    With dropped units zeroed, a plain LayerNorm would still average over them; this wrapper makes the
    masked model compute exactly what the exported model computes, for any norm class.
    """

    def __init__(self, inner: nn.Module, kept: torch.Tensor, full_size: int) -> None:
        super().__init__()
        self.inner = inner
        self.kept: torch.Tensor
        self.register_buffer("kept", kept.clone().long(), persistent=False)
        self.full_size = int(full_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = self.kept.to(x.device)
        y = self.inner(x.index_select(-1, kept))
        out = torch.zeros(*x.shape[:-1], self.full_size, dtype=y.dtype, device=y.device)
        return out.index_copy(-1, kept, y)
