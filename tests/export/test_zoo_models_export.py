"""Every zoo model: random keep-settings -> export (verified) -> cost == FlopCounterMode -> save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import netdiet
from engine_checks import assert_unchanged, check_dense, check_keep, keep_settings, state_snapshot
from netdiet import zoo

SMALL = {
    "resnet20": {"widths": (8, 16, 16)},
    "resnet56": {"widths": (4, 8, 8)},
    "vgg": {"layers": (8, "M", 16, "M", 16, "M", 32, "M"), "hidden": 16},
    "mobilenetv2": {"width_mult": 0.25},
    "vit": {"depth": 2, "dim": 32},
    "bert": {"vocab_size": 100, "hidden": 32, "intermediate": 64, "max_len": 32},
}
# Families whose forward accepts other image sizes (global pooling rather than a fixed flatten/pos-embed).
RESIZABLE = {"resnet20", "resnet56", "mobilenetv2"}


def _alt_inputs(name: str) -> tuple[torch.Tensor, ...]:
    """Another batch size, and another image size or sequence length where the family allows it."""
    x = zoo.example_inputs(name, batch_size=3, **SMALL[name])
    if name in RESIZABLE:
        return (torch.randn(3, x[0].shape[1], 40, 40),)
    if zoo.entry(name).input_kind == "tokens":
        ids, mask = x
        ids = torch.randint(0, SMALL[name]["vocab_size"], (3, 11))
        return (ids, torch.ones_like(ids))
    return x


@pytest.mark.parametrize("name", [n for n in zoo.names() if n in SMALL])
def test_zoo_model_exports_equivalent_and_costs_match(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build(name, **SMALL[name]).eval()
    inputs = zoo.example_inputs(name, **SMALL[name])
    snapshot = state_snapshot(model)
    space = netdiet.analyze(model, inputs)
    assert space.groups, "every zoo model has something to prune"
    check_dense(space, model, inputs)
    for i, keep in enumerate(keep_settings(space)):
        check_keep(space, keep, inputs, tmp_path / str(i) if i == 0 else None, alt_inputs=_alt_inputs(name))
    assert_unchanged(model, snapshot)


def test_zoo_names_are_all_covered() -> None:
    # A new zoo family must get a small config here (and so an end-to-end engine test).
    assert set(zoo.names()) <= set(SMALL)


def test_exported_model_reanalysed_costs_what_the_space_said() -> None:
    torch.manual_seed(0)
    name = "mobilenetv2"
    model = zoo.build(name, **SMALL[name]).eval()
    inputs = zoo.example_inputs(name, **SMALL[name])
    space = netdiet.analyze(model, inputs)
    keep = space.sample(0.5, seed=3)
    slim = space.export(keep)
    again = netdiet.analyze(slim, inputs)
    assert again.cost().flops == space.cost(keep).flops
    assert again.cost().params == space.cost(keep).params
    # The same groups, each with the kept number of units.
    sizes = sorted(g.size for g in again.groups)
    assert sizes == sorted(len(keep[g.name]) for g in space.groups)
