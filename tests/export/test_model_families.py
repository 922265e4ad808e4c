"""The model families users bring, end to end: analyze (with the export probe) -> a random setting ->
export -> equivalence with the masked model; then l1l2 for a few steps -> export within the budget.

torchvision and timm are test-only dependencies (torchvision imports through ../shared/tv_cpu_shim.py on
these machines); a family whose library is missing is skipped, never faked. What each family can prune,
and what the probe freezes and why, is asserted, so a regression in either shows here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netdiet
from engine_checks import check_dense, check_keep, n_params
from netdiet.export import export_assignment
from small_models import tiny_t5


def _vit_b16() -> tuple[nn.Module, Any]:
    tv = pytest.importorskip("torchvision")
    return tv.models.vit_b_16(weights=None, image_size=32, num_classes=10), torch.randn(2, 3, 32, 32)


def _swin_t() -> tuple[nn.Module, Any]:
    tv = pytest.importorskip("torchvision")
    return tv.models.swin_t(weights=None, num_classes=10), torch.randn(1, 3, 64, 64)


def _timm_vit() -> tuple[nn.Module, Any]:
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10)
    return model, torch.randn(2, 3, 32, 32)


def _t5() -> tuple[nn.Module, Any]:
    return tiny_t5()


# family -> (builder, kinds that must stay prunable, budget for the l1l2 run)
FAMILIES: dict[str, tuple[Callable[[], tuple[nn.Module, Any]], set[str], str]] = {
    "torchvision-vit_b_16": (_vit_b16, {"head", "neuron", "hidden"}, "flops=0.6"),
    "torchvision-swin_t": (_swin_t, {"head", "neuron", "hidden"}, "flops=0.6"),
    "timm-vit_tiny": (_timm_vit, {"head", "neuron", "hidden"}, "flops=0.6"),
    "hf-t5": (_t5, {"head", "neuron"}, "flops=0.7"),
}


def _loss(model: nn.Module, inputs: Any) -> torch.Tensor:
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    logits = out.logits if hasattr(out, "logits") else out
    return F.cross_entropy(
        logits.flatten(0, -2), torch.zeros(logits.flatten(0, -2).shape[0], dtype=torch.long)
    )


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[str, nn.Module, Any, netdiet.Space]:
    build, _, _ = FAMILIES[request.param]
    torch.manual_seed(0)
    model, inputs = build()
    model.eval()
    return request.param, model, inputs, netdiet.analyze(model, inputs)


def test_analyze_offers_what_export_delivers(family: tuple[str, nn.Module, Any, netdiet.Space]) -> None:
    name, model, inputs, space = family
    kinds = {g.kind for g in space.groups}
    assert FAMILIES[name][1] <= kinds, (name, kinds)
    assert space.probe is not None and space.probe.exports >= 1 and space.probe.seconds < 60
    check_dense(space, model, inputs)
    for seed in (0, 1):
        check_keep(space, space.sample(seed=seed), inputs)


def test_a_block_drops_where_the_family_has_one(family: tuple[str, nn.Module, Any, netdiet.Space]) -> None:
    """Every family here has residual layers the exporter can drop (T5: its feed-forward sub-layers)."""
    name, model, inputs, space = family
    blocks = space.knobs_of("block")
    assert blocks, name
    choice = netdiet.Assignment({blocks[0].id: 0, blocks[-1].id: 0})
    slim, applied = export_assignment(space, choice)  # checked against the masked model, blocks dropped
    assert set(applied["dropped_blocks"]) == {blocks[0].site, blocks[-1].site}
    assert netdiet.price(space, choice).flops == pytest.approx(netdiet.measured_flops(slim, inputs), rel=0.01)
    assert netdiet.price(space, choice).flops < space.cost().flops


@pytest.mark.parametrize("depth", [False, True], ids=["widths", "depth"])
def test_l1l2_a_few_steps_then_export_meets_the_budget(
    family: tuple[str, nn.Module, Any, netdiet.Space], depth: bool
) -> None:
    """With depth=True the block gates run on the family's own layers (T5's return tuples)."""
    name, model, inputs, space = family
    budget = FAMILIES[name][2]
    steps = 4
    comp = netdiet.Compressor(model, inputs, budget=budget, total_steps=steps, space=space, depth=depth)
    opt = torch.optim.SGD(comp.model.parameters(), lr=1e-4)
    for _ in range(steps):
        loss = _loss(comp.model, inputs) + comp.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        comp.step(loss.item())
    exported = comp.export()  # verified against the masked model
    ratio = float(budget.split("=")[1])
    assert exported.cost["flops"] <= ratio * exported.dense_cost["flops"] * (1 + 1e-9)
    assert exported.cost["flops"] == pytest.approx(netdiet.measured_flops(exported.model, inputs), rel=0.01)
    assert n_params(exported.model) < n_params(model)
    blocks = {k.site for k in space.knobs_of("block")}
    assert set(exported.assignment.blocks) == (blocks if depth else set())
