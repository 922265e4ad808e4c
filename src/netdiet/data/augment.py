"""Batched augmentation and normalisation on tensors.

Random crop with zero padding and horizontal flip are done for a whole batch with a few tensor ops,
so the training loop never calls PIL per image. Randomness comes from an explicit generator so a
data-parallel run and a resumed run see exactly the same augmented batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """`pad` pixels of zero padding before a random crop back to the input size; `flip` is horizontal."""

    pad: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"AugmentConfig.pad must be >= 0, got {self.pad}")


def random_crop_flip(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a (B, C, H, W) batch: per-sample random crop of the padded image and random h-flip."""
    B, C, H, W = x.shape
    if cfg.pad > 0:
        padded = F.pad(x, (cfg.pad, cfg.pad, cfg.pad, cfg.pad))
        oy = torch.randint(0, 2 * cfg.pad + 1, (B,), generator=generator)
        ox = torch.randint(0, 2 * cfg.pad + 1, (B,), generator=generator)
        rows = (oy[:, None] + torch.arange(H)).to(x.device)  # (B, H)
        cols = (ox[:, None] + torch.arange(W)).to(x.device)  # (B, W)
        b = torch.arange(B, device=x.device)[:, None, None, None]
        c = torch.arange(C, device=x.device)[None, :, None, None]
        x = padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]
    if cfg.flip:
        flip = (torch.rand(B, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def to_float_normalized(
    images_uint8_nhwc: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 (B, H, W, C) -> normalised float32 (B, C, H, W)."""
    x = images_uint8_nhwc.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - m) / s
