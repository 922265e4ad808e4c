"""MobileNetV2 (Sandler et al. 2018), CIFAR variant for 32x32 inputs.

Depthwise convs tie a layer's input and output channels and inverted residuals tie the block outputs
of a stage, two group shapes a ResNet does not exercise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from netdiet.zoo._config import require_positive

# (expansion t, output channels c, repeats n, first stride s). The first two strides are 1 (the
# ImageNet table has 1, 2): with a stride-1 stem a 32x32 image ends at 4x4 instead of 1x1.
CIFAR_INVERTED_RESIDUALS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of `divisor`, never dropping more than 10% (as in the paper's code)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclass
class MobileNetV2Config:
    """`width_mult` scales every width (rounded to multiples of 8)."""

    width_mult: float = 1.0
    num_classes: int = 10
    dropout: float = 0.2
    in_channels: int = 3

    def __post_init__(self) -> None:
        require_positive(
            "MobileNetV2Config",
            width_mult=self.width_mult,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
        )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MobileNetV2Config.dropout must be in [0, 1), got {self.dropout}")


class ConvBNReLU6(nn.Sequential):
    """Conv -> BN -> ReLU6; groups == channels makes it depthwise."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection, with a residual add when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, 1))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:  # fixed at construction, not data-dependent
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """Stride-1 stem, the CIFAR inverted-residual table, 1x1 conv to 1280*width, avgpool, Linear."""

    def __init__(self, config: MobileNetV2Config) -> None:
        super().__init__()
        self.config = config
        wm = config.width_mult
        in_ch = make_divisible(32 * wm)
        self.last_channels = make_divisible(1280 * max(1.0, wm))
        layers: list[nn.Module] = [ConvBNReLU6(config.in_channels, in_ch, 3, stride=1)]
        for t, c, n, s in CIFAR_INVERTED_RESIDUALS:
            out_ch = make_divisible(c * wm)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        layers.append(ConvBNReLU6(in_ch, self.last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.last_channels, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


def build_mobilenetv2(config: MobileNetV2Config) -> MobileNetV2:
    """Builder used by the zoo registry."""
    return MobileNetV2(config)
