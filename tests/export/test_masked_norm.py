"""Norm modules over a pruned dimension: the masked reference renormalises over the kept units only."""

from __future__ import annotations

import torch

import netdiet
from engine_checks import check_keep


def test_channels_first_layer_norm_module_is_masked_on_its_channel_dim() -> None:
    class LayerNorm2d(torch.nn.LayerNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        LayerNorm2d(8),
        torch.nn.GELU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    ).eval()
    x = torch.randn(2, 3, 6, 6)  # H = W = 6 != C = 8, and a second case where they coincide below
    space = netdiet.analyze(model, x)
    assert any(g.size == 8 for g in space.groups)
    check_keep(space, space.sample(0.5, seed=0), x)
    space8 = netdiet.analyze(model, torch.randn(2, 3, 8, 8))
    check_keep(space8, space8.sample(0.5, seed=1), torch.randn(2, 3, 8, 8))
