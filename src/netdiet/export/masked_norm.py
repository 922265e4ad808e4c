"""A norm over the last dimension whose statistics cover only the kept units (the masked reference)."""

from __future__ import annotations

import torch
from torch import nn


class MaskedLastDimNorm(nn.Module):
    """Apply a sliced copy of the norm to the kept positions and write zeros elsewhere.

    With dropped units zeroed, a plain LayerNorm would still average over them; this wrapper makes the
    masked model compute exactly what the exported model computes, for any norm class. `dim` is the
    normalised dimension of the module's *input* (the last one, or 1 for a channels-first LayerNorm2d).
    """

    def __init__(self, inner: nn.Module, kept: torch.Tensor, full_size: int, dim: int = -1) -> None:
        super().__init__()
        self.inner = inner
        self.kept: torch.Tensor
        self.register_buffer("kept", kept.clone().long(), persistent=False)
        self.full_size = int(full_size)
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = self.kept.to(x.device)
        y = self.inner(x.index_select(self.dim, kept))
        shape = list(y.shape)
        shape[self.dim] = self.full_size
        out = torch.zeros(shape, dtype=y.dtype, device=y.device)
        return out.index_copy(self.dim, kept, y)
