"""`evolution` with depth genes: blocks are kept or dropped beside widths, every candidate meets the
budget, candidates are scored without their dropped blocks, and the exported model drops them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netdiet import zoo
from netdiet.compressor import Compressor
from netdiet.errors import ConfigError
from netdiet.export.blocks import DroppedBlock
from small_models import conv_stack

X = zoo.example_inputs("resnet20", batch_size=2)
SMALL = dict(population=12, parents=4, mutations=4, crossovers=4, generations=3, fitness="evaluate")


def test_depth_genes_drop_blocks_within_the_budget() -> None:
    torch.manual_seed(0)
    model = zoo.build("resnet20", widths=[8, 16, 32]).eval()
    scored: list[int] = []

    def fewer_blocks_score_higher(masked: nn.Module) -> float:
        """A stand-in score that prefers dropping blocks over thinning layers (so the search must use
        depth genes to win): count of dropped blocks plus kept weight magnitude."""
        dropped = sum(isinstance(m, DroppedBlock) for m in masked.modules())
        scored.append(dropped)
        kept = sum(float(m.weight.abs().sum()) for m in masked.modules() if isinstance(m, nn.Conv2d))
        return 10.0 * dropped + kept / 1e3

    comp = Compressor(
        model, X, "flops=0.6", method="evolution", evaluator=fewer_blocks_score_higher, depth=True, **SMALL
    )
    method = comp.method
    assert len(method.subnets.block_ids) == 7
    exported = comp.export()
    assert exported.cost["flops"] <= method.target * (1 + 1e-9)
    assert max(scored) > 0, "candidates without some blocks were scored without them"
    dropped = [n for n, m in exported.model.named_modules() if isinstance(m, DroppedBlock)]
    assert dropped, "the search picked a candidate that drops blocks, and the export drops them"
    assert sorted(dropped) == sorted(p for p, v in exported.assignment.blocks.items() if int(v) == 0)


def test_depth_without_blocks_is_refused() -> None:
    with pytest.raises(ConfigError, match="no residual block"):
        Compressor(
            conv_stack((8, 8, 8)),
            (torch.randn(1, 3, 8, 8),),
            "flops=0.5",
            method="evolution",
            evaluator=lambda m: 0.0,
            depth=True,
            **SMALL,
        )
