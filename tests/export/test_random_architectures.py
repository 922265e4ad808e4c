"""Property-based: random small CNNs (residuals, concats, depthwise convs, splits, widths) export exactly."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import netdiet
from engine_checks import check_dense, check_keep

BLOCKS = ("conv", "residual", "concat", "depthwise", "glu", "se")


class RandomNet(nn.Module):
    """A stem, then a chain of blocks chosen by hypothesis, then pool + linear."""

    def __init__(self, spec: list[tuple[str, int]]) -> None:
        super().__init__()
        self.spec = [kind for kind, _ in spec]
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        c = 6
        self.blocks = nn.ModuleList()
        for kind, width in spec:
            m = nn.Module()
            if kind == "conv":
                m.conv, m.bn = nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width)
                c = width
            elif kind == "residual":
                m.a, m.b = nn.Conv2d(c, width, 3, padding=1), nn.Conv2d(width, c, 1)
            elif kind == "concat":
                m.a, m.b = nn.Conv2d(c, width, 1), nn.Conv2d(c, width + 1, 3, padding=1)
                c = 2 * width + 1
            elif kind == "depthwise":
                m.dw, m.pw = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, width, 1)
                c = width
            elif kind == "glu":
                m.conv = nn.Conv2d(c, 2 * width, 1)
                c = width
            else:  # squeeze-excitation
                m.fc1, m.fc2 = nn.Conv2d(c, max(1, width // 2), 1), nn.Conv2d(max(1, width // 2), c, 1)
            self.blocks.append(m)
        self.fc = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for kind, m in zip(self.spec, self.blocks):
            if kind == "conv":
                x = F.relu(m.bn(m.conv(x)))
            elif kind == "residual":
                x = x + m.b(F.relu(m.a(x)))
            elif kind == "concat":
                x = torch.cat([F.relu(m.a(x)), F.relu(m.b(x))], dim=1)
            elif kind == "depthwise":
                x = F.relu(m.pw(F.relu(m.dw(x))))
            elif kind == "glu":
                p, q = m.conv(x).chunk(2, dim=1)
                x = p * torch.sigmoid(q)
            else:
                s = torch.sigmoid(m.fc2(F.relu(m.fc1(F.adaptive_avg_pool2d(x, 1)))))
                x = x * s
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


specs = st.lists(st.tuples(st.sampled_from(BLOCKS), st.integers(2, 7)), min_size=1, max_size=4)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, seed=st.integers(0, 2**16), ratio=st.one_of(st.none(), st.floats(0.1, 1.0)))
def test_random_architecture_exports_equivalent(
    spec: list[tuple[str, int]], seed: int, ratio: float | None
) -> None:
    torch.manual_seed(seed)
    model = RandomNet(spec).eval()
    x = torch.randn(2, 3, 6, 6)
    space = netdiet.analyze(model, x)
    assert space.groups  # at least the stem's channels
    check_dense(space, model, x)
    keep = space.sample(ratio, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        check_keep(space, keep, x, Path(tmp), alt_inputs=torch.randn(3, 3, 9, 7))
