"""VGG-11-style CNN with BatchNorm for 32x32 inputs.

The classifier flattens a C x 2 x 2 map on purpose: pruning a channel of the last conv must remove
four consecutive input columns of the first Linear, the flatten->linear case of the group finder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from netdiet.zoo._config import require_positive

DEFAULT_VGG_LAYERS: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")


@dataclass
class VGGConfig:
    """`layers`: conv widths and "M" for a 2x2 max-pool; four pools take 32x32 down to 2x2."""

    layers: tuple[int | str, ...] = field(default=DEFAULT_VGG_LAYERS)
    num_classes: int = 10
    hidden: int = 256
    dropout: float = 0.5
    in_channels: int = 3
    image_size: int = 32

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        convs = [v for v in self.layers if v != "M"]
        if not convs:
            raise ValueError("VGGConfig.layers needs at least one conv width")
        for v in self.layers:
            if v != "M" and (not isinstance(v, int) or v <= 0):
                raise ValueError(f"VGGConfig.layers entries must be positive ints or 'M', got {v!r}")
        require_positive(
            "VGGConfig", num_classes=self.num_classes, hidden=self.hidden, in_channels=self.in_channels
        )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VGGConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.final_spatial < 1:
            raise ValueError(
                f"VGGConfig: {self.layers.count('M')} max-pools shrink image_size {self.image_size} below 1"
            )

    @property
    def final_spatial(self) -> int:
        """Side length of the last feature map."""
        return self.image_size // (2 ** self.layers.count("M"))


class VGG(nn.Module):
    """Conv-BN-ReLU stacks, max-pools, then flatten -> Linear -> ReLU -> Dropout -> Linear."""

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        self.config = config
        modules: list[nn.Module] = []
        ch = config.in_channels
        for v in config.layers:
            if v == "M":
                modules.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                modules += [nn.Conv2d(ch, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                ch = v
        self.features = nn.Sequential(*modules)
        s = config.final_spatial
        self.fc1 = nn.Linear(ch * s * s, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.hidden, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


def build_vgg(config: VGGConfig) -> VGG:
    """Builder used by the zoo registry."""
    return VGG(config)
