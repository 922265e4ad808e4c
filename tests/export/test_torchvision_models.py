"""torchvision classification models (weights=None, small inputs): analyse, export at 0.5, cost == counter.

Skipped where torchvision does not import (tests/conftest.py installs the CPU shim where it exists).
"""

from __future__ import annotations

import pytest
import torch

import netdiet
from engine_checks import check_dense, check_keep

torchvision = pytest.importorskip("torchvision")

FAST = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_0"]
SLOW = ["efficientnet_b0", "regnet_y_400mf", "densenet121", "googlenet"]


def _run(name: str) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    space = netdiet.analyze(model, x)
    assert space.groups
    check_dense(space, model, x)
    check_keep(space, space.sample(0.5, seed=0), x)


@pytest.mark.parametrize("name", FAST)
def test_torchvision_fast(name: str) -> None:
    _run(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_torchvision_slow(name: str) -> None:
    _run(name)


@pytest.mark.slow
def test_torchvision_convnext_tiny() -> None:
    """LayerNorm2d normalises channels after a permute: the masked reference must find the input dim."""
    _run("convnext_tiny")
