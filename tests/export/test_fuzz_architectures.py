"""Fuzzing at scale: 200 random architectures per run (fixed seeds), each analysed, exported at a random
setting and checked for equivalence with the masked model, at other input sizes, and for exact FLOPs
against FlopCounterMode on the dense and the exported model."""

from __future__ import annotations

import pytest
import torch

import netdiet
from engine_checks import check_dense, check_keep
from fuzz_models import build

SEEDS = range(200)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_architecture(seed: int) -> None:
    case = build(seed)
    space = netdiet.analyze(case.model, case.inputs)
    check_dense(space, case.model, case.inputs)
    gen = torch.Generator().manual_seed(seed)
    ratio = None if seed % 3 == 0 else float(torch.empty(1).uniform_(0.2, 0.9, generator=gen))
    keep = space.sample(ratio, seed=seed)
    check_keep(space, keep, case.inputs, alt_inputs=case.alt_inputs)
