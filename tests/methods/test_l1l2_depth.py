"""l1l2 with depth gates: one gate per droppable residual block, priced at its share of the block's cost,
read off as the lowest-gated blocks the relaxed cost paid for, exported as dropped blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import netdiet
from netdiet import zoo
from netdiet.compressor import Compressor
from netdiet.errors import ConfigError
from netdiet.export.blocks import DroppedBlock
from small_models import conv_stack, tiny_t5

X = zoo.example_inputs("resnet20", batch_size=2)
BLOCKS = ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]


def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.build("resnet20", widths=[8, 16, 32]).eval()


def test_block_gates_leave_the_model_unchanged_and_price_a_closed_gate_as_a_dropped_block() -> None:
    model = resnet()
    comp = Compressor(model, X, "flops=0.5", method="l1l2", depth=True, total_steps=10)
    method = comp.method
    assert method.gates.block_names == BLOCKS
    assert all(any(g is p for p in method.own_parameters()) for g in method.gates.blocks)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(comp.model.eval()(x), model(x))  # lerp at g = 1 is the block's output exactly
    assert float(method.surrogate().detach()) == pytest.approx(method.dense, rel=1e-9)
    with torch.no_grad():
        method.gates.block("layer2.1").fill_(0.0)
        method.gates.block("layer3.2").fill_(0.25)
    space = comp.space
    expected = netdiet.price(space, {"block:layer2.1": 0}).flops
    full, gone = netdiet.price(space).flops, netdiet.price(space, {"block:layer3.2": 0}).flops
    expected -= 0.75 * (full - gone)
    assert float(method.surrogate().detach()) == pytest.approx(expected, rel=1e-9)
    # a closed gate is the dropped block: the gated model equals the export that drops it
    slim, _ = netdiet.export.export_assignment(space, netdiet.Assignment({"block:layer2.1": 0}))
    with torch.no_grad():
        method.gates.block("layer3.2").fill_(1.0)
    torch.testing.assert_close(comp.model(x), slim(x), rtol=1e-5, atol=1e-6)


def test_read_off_drops_the_lowest_gated_blocks_as_far_as_the_relaxed_cost_paid() -> None:
    comp = Compressor(resnet(), X, "flops=0.5", method="l1l2", depth=True, total_steps=10)
    method = comp.method
    gates = dict(zip(BLOCKS, [0.55, 0.45, 0.5, 0.5, 0.9, 1.0, 0.6]))
    with torch.no_grad():
        for path, g in gates.items():
            method.gates.block(path).fill_(g)
    # ResNet-20's blocks all cost the same: sum(1 - g) = 2.5 blocks paid, so the 2 or 3 lowest go
    blocks = method._read_off_blocks()
    dropped = sorted(p for p, v in blocks.items() if v == 0)
    assert dropped in (["layer1.1", "layer1.2", "layer2.1"], ["layer1.1", "layer1.2"])
    with torch.no_grad():
        for path in BLOCKS:
            method.gates.block(path).fill_(0.97)
    assert set(method._read_off_blocks().values()) == {1}  # a fifth of a block paid: none dropped


def test_a_gated_phase_trades_blocks_and_widths_and_the_export_drops_the_chosen_blocks() -> None:
    model = resnet()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    # rewind=False: a hardening phase in which dropped blocks fade out and kept ones grow back to whole
    comp = Compressor(model, X, "flops=0.3", method="l1l2", depth=True, total_steps=60, rewind=False)
    opt = torch.optim.SGD(comp.model.parameters(), lr=0.01, momentum=0.9)
    comp.model.train()
    for _ in range(60):
        loss = F.cross_entropy(comp.model(x), y) + comp.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        comp.step(loss.item())
    method = comp.method
    moved = list(method.snapshots[2]["blocks"].values())
    assert min(moved) < 0.9, "the penalty moved the block gates"
    result = comp.export()  # verified against the masked model with the same blocks dropped
    assert result.cost["flops"] <= method.target * (1 + 1e-9)
    assert result.cost["flops"] >= method.target * (1 - method.config.tolerance) * (1 - 1e-9)
    chosen = result.assignment.blocks
    assert set(chosen) == set(BLOCKS)
    dropped = sorted(n for n, m in result.model.named_modules() if isinstance(m, DroppedBlock))
    assert dropped == sorted(p for p, v in chosen.items() if v == 0)
    assert dropped, "at 30% of the FLOPs the gates dropped some blocks"
    for path, kept in chosen.items():  # the trained model is the exported one: gates hardened to 0/1
        assert float(method.gates.block(path).detach()) == pytest.approx(float(kept), abs=1e-6)


def test_block_gates_work_on_layers_that_return_tuples() -> None:
    """T5 layers return (stream, position bias, ...): the gate mixes the stream and passes the rest."""
    model, inputs = tiny_t5(layers=3)
    comp = Compressor(model, inputs, "flops=0.7", method="l1l2", depth=True, total_steps=10)
    method = comp.method
    assert "encoder.block.1" in method.gates.block_names
    ref = model(**inputs).logits
    torch.testing.assert_close(comp.model.eval()(**inputs).logits, ref, rtol=0, atol=0)
    with torch.no_grad():
        method.gates.block("encoder.block.1").fill_(0.0)
    slim, _ = netdiet.export.export_assignment(comp.space, netdiet.Assignment({"block:encoder.block.1": 0}))
    torch.testing.assert_close(comp.model(**inputs).logits, slim(**inputs).logits, rtol=1e-4, atol=1e-5)


def test_depth_without_blocks_is_refused() -> None:
    with pytest.raises(ConfigError, match="no residual block"):
        Compressor(conv_stack((8, 8, 8)), (torch.randn(1, 3, 8, 8),), "flops=0.5", method="l1l2", depth=True)
