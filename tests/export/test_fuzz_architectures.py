"""Fuzzing at scale: 200 random architectures per run (fixed seeds), each analysed, exported at a random
setting and checked for equivalence with the masked model, at other input sizes, and for exact FLOPs
against FlopCounterMode on the dense and the exported model."""

from __future__ import annotations

import pytest
import torch

import netdiet
from engine_checks import check_dense, check_keep, n_params, rel
from fuzz_models import IMAGE_BLOCKS, SEQUENCE_BLOCKS, build
from netdiet.export import export_assignment

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
    blocks = space.knobs_of("block")
    if blocks:  # depth: drop a random subset of the droppable blocks too
        dropped = {k.id: 0 for k in blocks if torch.rand(1, generator=gen).item() < 0.5} or {blocks[0].id: 0}
        choice = netdiet.Assignment(dropped).with_values({f"keep:{n}": v for n, v in keep.items()})
        slim, applied = export_assignment(space, choice)  # checked against the masked model, blocks dropped
        assert len(applied["dropped_blocks"]) == len(dropped)
        priced = netdiet.price(space, choice)
        assert rel(priced.flops, netdiet.measured_flops(slim, case.inputs)) <= 0.01
        assert int(priced.params) == n_params(slim)


def test_the_generator_covers_every_block_kind_and_depth() -> None:
    kinds = {kind for seed in SEEDS for kind, _ in build(seed).spec}
    assert kinds == set(IMAGE_BLOCKS) | set(SEQUENCE_BLOCKS)
    with_blocks = sum(
        bool(netdiet.analyze(build(s).model, build(s).inputs, probe=False).knobs_of("block"))
        for s in range(0, 40)
    )
    assert with_blocks >= 10
