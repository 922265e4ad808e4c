"""`evolution`: no candidate of any generation is over the budget, the accuracy predictor beats a
constant predictor on held-out sub-networks, a fixed seed gives the same search, true-evaluation
fitness scores every candidate, and its configuration errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from netdiet.compressor import Compressor
from netdiet.errors import ConfigError
from netdiet.methods.evolution import Evolution, EvolutionConfig
from small_models import conv_stack

EXAMPLE = (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)),)


def output_energy(model: nn.Module) -> float:
    """A smooth, deterministic stand-in for accuracy that depends on every group's width: the weight
    magnitude the masked model keeps in its layers, the first ones weighted most."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return float(sum(m.weight.abs().sum() / (i + 1) for i, m in enumerate(layers)))


def evolution(budget: str = "flops=0.4", **config: Any) -> Compressor:
    torch.manual_seed(0)
    return Compressor(
        conv_stack((16, 32, 32)), EXAMPLE, budget, method="evolution", evaluator=output_energy, **config
    )


SMALL = dict(population=12, parents=4, mutations=4, crossovers=4, generations=4)


def test_no_candidate_of_any_generation_is_over_the_budget() -> None:
    comp = evolution("flops=0.3", fitness="evaluate", **SMALL)
    method = comp.method
    assert isinstance(method, Evolution)
    seen: list[dict[str, int]] = []
    original = method._feasible

    def spy(counts: dict[str, int], rng: Any) -> dict[str, int]:
        out = original(counts, rng)
        seen.append(out)
        return out

    method._feasible = spy  # type: ignore[method-assign]
    method.search()
    assert len(seen) == SMALL["population"] + SMALL["generations"] * 8
    for counts in seen:
        assert method.subnets.price(counts) <= method.target * (1 + 1e-9)
    assert len(method.scores) >= SMALL["population"]  # every distinct candidate was truly evaluated
    assert method.best is not None and method.best[0] == max(method.scores.values())
    exported = comp.export()
    assert exported.cost["flops"] <= method.target * (1 + 1e-9)


def test_the_accuracy_predictor_beats_a_constant_on_held_out_subnetworks() -> None:
    comp = evolution("flops=0.5", predictor_samples=64, **SMALL)
    method = comp.method
    method.search()
    q = method.quality
    assert q["held_out"] == 16
    assert q["rmse"] < 0.7 * q["constant_rmse"], q
    assert q["kendall_tau"] > 0.4, q
    record = method.search_record()
    assert record["evaluated_subnets"] == len(method.scores) <= 64 + 1
    assert record["best_true_score"] == method.true_score(method.best[1])


def test_rescoring_the_best_predicted_candidates_never_returns_a_truly_worse_one() -> None:
    plain = evolution("flops=0.3", seed=4, predictor_samples=16, **SMALL).method
    plain.search()
    rescored = evolution("flops=0.3", seed=4, predictor_samples=16, rescore=5, **SMALL).method
    rescored.search()
    assert rescored.best_true is not None and plain.best_true is not None
    assert rescored.best_true >= plain.best_true  # the predictor's pick is among the five rescored
    assert len(rescored.scores) <= len(plain.scores) + 5
    assert rescored.subnets.price(rescored.best[1]) <= rescored.target * (1 + 1e-9)


def test_a_fixed_seed_gives_the_same_search() -> None:
    picks = []
    for seed in (1, 1, 2):
        method = evolution(seed=seed, predictor_samples=16, **SMALL).method
        picks.append((method.search(), [g["best_fitness"] for g in method.generations]))
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"population": 10, "parents": 2, "mutations": 2, "crossovers": 2}, "must equal population"),
        ({"fitness": "oracle"}, "fitness"),
        ({"mutation_prob": 0.0}, "mutation_prob"),
        ({"predictor_samples": 4}, "predictor_samples"),
        ({"rescore": 60}, "rescore"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EvolutionConfig(**config)


def test_mixed_precision_search_gives_each_layer_its_bits_scores_quantized_and_meets_a_bops_budget() -> None:
    from netdiet.quant import quantized_layers

    seen_bits: list[set[int]] = []

    def quantized_energy(model: nn.Module) -> float:
        layers = quantized_layers(model)
        seen_bits.append({q.weight_bits for q in layers.values()})
        return output_energy(model) + 0.01 * sum(q.weight_bits for q in layers.values())

    torch.manual_seed(0)
    comp = Compressor(
        conv_stack((16, 32, 32)),
        EXAMPLE,
        "bops=0.03",
        method="evolution",
        evaluator=quantized_energy,
        calibration=[torch.randn(4, 3, 16, 16)],
        weight_bits=(4, 8),
        predictor_samples=12,
        **SMALL,
    )
    method = comp.method
    assert isinstance(method, Evolution)
    assert comp.bits == 8 and not method.context.fixed  # the method sets every bit knob itself
    assert len(method.subnets.bit_ids) == 4  # three convs and the classifier
    method.search()
    assert seen_bits and all(b and b <= {4, 8} for b in seen_bits)  # every candidate scored quantized
    assert any(len(b) == 2 for b in seen_bits)  # ... at mixed bits
    assignment = method.read_off()
    assert set(assignment.weight_bits.values()) <= {4, 8} and set(assignment.act_bits.values()) == {8}
    exported = comp.export()
    assert exported.cost["bops"] <= 0.03 * exported.dense_cost["bops"] * (1 + 1e-9)
    assert {q.weight_bits for q in quantized_layers(exported.model).values()} == set(
        assignment.weight_bits.values()
    )


def test_scoring_a_candidate_with_bits_needs_calibration() -> None:
    comp = Compressor(
        conv_stack((16, 32, 32)),
        EXAMPLE,
        "bops=0.03",
        method="evolution",
        evaluator=output_energy,
        weight_bits=(4, 8),
        predictor_samples=8,
        **SMALL,
    )
    with pytest.raises(ConfigError, match="calibration"):
        comp.method.search()
