"""Export as a chain of handlers (slice, factorise, quantise), each checked against its own reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netdiet
from netdiet.cost import price
from netdiet.errors import ConfigError, VerificationError
from netdiet.export import HANDLERS, RECIPE_ATTR, export_assignment, mask_model
from netdiet.quant import quantized_layers
from netdiet.space import Assignment


def low_rank_mlp(rank: int | None = 8) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
    if rank is not None:
        with torch.no_grad():  # layer 2's weight has rank `rank`: a rank-`rank` factorisation is exact
            model[2].weight.copy_(torch.randn(64, rank) @ torch.randn(rank, 64) / 8)
    return model


def test_the_chain_runs_slice_then_drop_blocks_then_factorise_then_quantise() -> None:
    assert [h.kinds for h in HANDLERS] == [("keep",), ("block",), ("rank",), ("weight_bits", "act_bits")]


def test_widths_and_ranks_export_together_and_match_the_masked_reference() -> None:
    model = low_rank_mlp()
    space = netdiet.analyze(model, torch.randn(1, 64))
    first = space.groups[0]  # the 64 units between layers 0 and 2
    a = Assignment.of(keep={first.name: torch.arange(0, 64, 2)}, ranks={"2.weight": torch.arange(8)})
    slim, applied = export_assignment(space, a)
    assert applied["ranks"] == {"2": 8} and applied["kept"][first.name] == 32
    assert isinstance(slim[2], nn.Sequential) and slim[2][0].out_features == 8
    assert slim[0].out_features == 32
    x = torch.randn(4, 64)
    reference = mask_model(space, a.keep)
    assert torch.allclose(slim(x), reference(x), atol=1e-4)
    recipe = getattr(slim, RECIPE_ATTR)
    assert recipe["ranks"] == {"2": 8} and Assignment.from_json(recipe["assignment"], space) == a
    assert sum(p.numel() for p in slim.parameters()) == price(space, a).params


def test_a_rank_that_does_not_pay_is_left_dense() -> None:
    space = netdiet.analyze(low_rank_mlp(), torch.randn(1, 64))
    slim, applied = export_assignment(space, Assignment.of(ranks={"2.weight": 40}))
    assert applied["ranks"] == {} and isinstance(slim[2], nn.Linear)


def test_the_factorise_handler_checks_its_own_reference() -> None:
    space = netdiet.analyze(low_rank_mlp(rank=None), torch.randn(1, 64))  # full-rank weight
    with pytest.raises(VerificationError):
        export_assignment(space, Assignment.of(ranks={"2.weight": 8}))


def calibration(n: int = 3) -> list[torch.Tensor]:
    return [torch.randn(16, 64, generator=torch.Generator().manual_seed(i)) for i in range(n)]


def test_bits_need_calibration_batches_and_32_bits_change_nothing() -> None:
    space = netdiet.analyze(low_rank_mlp(), torch.randn(1, 64))
    with pytest.raises(ConfigError, match="calibration="):
        export_assignment(space, Assignment.of(weight_bits={"2.weight": 8}, act_bits={"2": 8}))
    slim, applied = export_assignment(space, Assignment.of(weight_bits={"2.weight": 32}, act_bits={"2": 32}))
    assert isinstance(slim[2], nn.Linear) and "quant" not in applied


def test_the_quantise_handler_quantizes_exactly_the_layers_its_knobs_name() -> None:
    space = netdiet.analyze(low_rank_mlp(), torch.randn(1, 64))
    a = Assignment.of(weight_bits={"0.weight": 8, "2.weight": 4}, act_bits={"0": 8, "2": 8})
    q, applied = export_assignment(space, a, calibration=calibration())
    layers = quantized_layers(q)
    assert {p: (ql.weight_bits, ql.act_bits) for p, ql in layers.items()} == {"0": (8, 8), "2": (4, 8)}
    assert applied["quant"]["bits"] == {"0": [8, 8], "2": [4, 8]}
    assert getattr(q, RECIPE_ATTR)["quant"] == applied["quant"]
    x = torch.randn(4, 64)
    assert (q(x) - space.model(x)).abs().max() <= 0.2 * space.model(x).abs().max()


def test_bits_of_a_factorised_layer_go_to_both_factors() -> None:
    space = netdiet.analyze(low_rank_mlp(), torch.randn(1, 64))
    a = Assignment.of(ranks={"2.weight": torch.arange(8)}, weight_bits={"2.weight": 8}, act_bits={"2": 8})
    q, applied = export_assignment(space, a, calibration=calibration())
    assert applied["ranks"] == {"2": 8}
    assert sorted(quantized_layers(q)) == ["2.0", "2.1"]


def test_a_pruned_and_quantized_model_saves_and_loads_to_identical_outputs(tmp_path) -> None:
    model = low_rank_mlp()
    space = netdiet.analyze(model, torch.randn(1, 64))
    bits = Assignment.uniform_bits(space.knobs, 8)
    a = Assignment({**Assignment.of(keep={space.groups[0].name: torch.arange(0, 64, 2)}), **bits})
    q, _ = export_assignment(space, a, calibration=calibration())
    netdiet.save(q, tmp_path / "m")
    loaded = netdiet.load(tmp_path / "m", low_rank_mlp())
    x = torch.randn(5, 64)
    assert torch.equal(q(x), loaded(x))
    assert sorted(quantized_layers(loaded)) == sorted(quantized_layers(q)) == ["0", "2", "4"]


def test_export_leaves_the_analysed_model_unchanged() -> None:
    model = low_rank_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    space = netdiet.analyze(model, torch.randn(1, 64))
    export_assignment(
        space, Assignment.of(keep={space.groups[0].name: torch.arange(16)}, ranks={"2.weight": 8})
    )
    assert model[2].weight.shape == (64, 64)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
