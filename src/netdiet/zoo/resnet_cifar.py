"""CIFAR ResNets (He et al. 2016, section 4.2): 3 stages of BasicBlocks, widths 16/32/64.

These are the standard small CNN benchmarks for structured pruning: residual adds tie the channels of
every block in a stage together, which is exactly what the channel-group finder must discover.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from netdiet.zoo._config import require_positive


@dataclass
class ResNetCifarConfig:
    """Depth must be 6n+2; `widths` are the channel counts of the three stages."""

    depth: int = 20
    num_classes: int = 10
    widths: tuple[int, int, int] = (16, 32, 64)
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.depth < 8 or (self.depth - 2) % 6 != 0:
            raise ValueError(
                f"ResNetCifarConfig.depth must be 6n+2 with n >= 1 (20, 32, 44, 56, ...), got {self.depth}"
            )
        self.widths = tuple(int(w) for w in self.widths)  # type: ignore[assignment]
        if len(self.widths) != 3:
            raise ValueError(f"ResNetCifarConfig.widths must have 3 entries, got {self.widths!r}")
        require_positive("ResNetCifarConfig", num_classes=self.num_classes, in_channels=self.in_channels)
        require_positive("ResNetCifarConfig", **{f"widths[{i}]": w for i, w in enumerate(self.widths)})


class BasicBlock(nn.Module):
    """Two 3x3 convs; the shortcut is a 1x1 conv + BN only where stride or width changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs."""

    def __init__(self, config: ResNetCifarConfig) -> None:
        super().__init__()
        self.config = config
        n = (config.depth - 2) // 6
        w1, w2, w3 = config.widths
        self.conv1 = nn.Conv2d(config.in_channels, w1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.layer1 = self._stage(w1, w1, n, stride=1)
        self.layer2 = self._stage(w1, w2, n, stride=2)
        self.layer3 = self._stage(w2, w3, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(in_ch: int, out_ch: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_ch, out_ch, stride)]
        blocks += [BasicBlock(out_ch, out_ch, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def build_resnet_cifar(config: ResNetCifarConfig) -> ResNetCifar:
    """Builder used by the zoo registry."""
    return ResNetCifar(config)


@dataclass
class ResNet20Config(ResNetCifarConfig):
    """ResNet-20 (about 0.27M parameters)."""

    depth: int = 20


@dataclass
class ResNet56Config(ResNetCifarConfig):
    """ResNet-56 (about 0.85M parameters)."""

    depth: int = 56
