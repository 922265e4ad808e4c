"""`amc`: every episode's policy meets the budget, the warm-up is random and the exploration noise
decays after it, a fixed seed gives the same search, and the read-off is the best episode."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from netdiet.compressor import Compressor
from netdiet.errors import ConfigError
from netdiet.methods.amc import Amc, AmcConfig
from small_models import conv_stack

EXAMPLE = (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)),)


def kept_weight_share(model: nn.Module) -> float:
    """A deterministic stand-in for accuracy: the weight magnitude the masked model keeps in its first
    two layers (wider early layers score higher)."""
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return float(sum(m.weight.abs().sum() for m in convs[:2]))


def amc(budget: str = "flops=0.4", **config: Any) -> Compressor:
    torch.manual_seed(0)
    return Compressor(
        conv_stack((16, 32, 32)), EXAMPLE, budget, method="amc", evaluator=kept_weight_share, **config
    )


@pytest.mark.parametrize("budget", ["flops=0.4", "params=0.3", "flops=0.15"])
def test_every_episode_policy_meets_the_budget(budget: str) -> None:
    comp = amc(budget, episodes=12, warmup=4, hidden=32)
    method = comp.method
    assert isinstance(method, Amc)
    method.search()
    assert len(method.episodes) == 12
    for record in method.episodes:
        assert method.subnets.price(record["counts"]) <= method.target * (1 + 1e-9), record
        assert record["cost_ratio"] <= method.target / method.reference * (1 + 1e-9)
    exported = comp.export()
    metric = budget.split("=")[0]
    assert exported.cost[metric] <= method.target * (1 + 1e-9)
    assert comp.search_cost()["evaluations"] == 12


def test_the_read_off_is_the_best_episode_and_the_warmup_is_random_then_noise_decays() -> None:
    comp = amc(episodes=10, warmup=3, hidden=32, noise=0.4, noise_decay=0.5)
    method = comp.method
    method.search()
    scores = [r["score"] for r in method.episodes]
    assert method.best is not None and method.best[0] == max(scores)
    best = method.episodes[scores.index(max(scores))]["counts"]
    assert {k: int(v.numel()) for k, v in method.read_off().keep.items()} == best
    noise = [r["noise"] for r in method.episodes]
    assert noise[:3] == [None] * 3
    assert (
        noise[3] == pytest.approx(0.4) and noise[4] == pytest.approx(0.2) and noise[5] == pytest.approx(0.1)
    )
    assert len({tuple(r["counts"].values()) for r in method.episodes[:3]}) == 3  # random warm-up actions


def test_a_fixed_seed_gives_the_same_search_and_another_seed_another() -> None:
    runs = []
    for seed in (3, 3, 4):
        method = amc(episodes=8, warmup=3, hidden=32, seed=seed).method
        method.search()
        runs.append([tuple(r["counts"].values()) for r in method.episodes])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_the_action_bound_uses_up_what_later_groups_cannot_give_back() -> None:
    method = amc("flops=0.3", episodes=1, warmup=1, hidden=8).method
    assert isinstance(method, Amc)
    s = method.subnets
    # asking for everything: each group gets the most it can while the rest could still shrink to fit
    counts, _, actions = method.episode(lambda state: 1.0)
    assert s.price(counts) <= method.target * (1 + 1e-9)
    assert actions[0] > 0.0  # the first group keeps more than its minimum ...
    assert any(a < 1.0 for a in actions)  # ... and the budget cut somewhere
    # asking for nothing: every group at its smallest allowed fraction (min_keep)
    low, _, _ = method.episode(lambda state: 0.0)
    assert s.price(low) < s.price(counts)


def test_amc_needs_an_evaluator_and_refuses_bad_configs() -> None:
    with pytest.raises(ConfigError, match="evaluator"):
        Compressor(conv_stack((16, 32, 32)), EXAMPLE, "flops=0.5", method="amc")
    with pytest.raises(ConfigError, match="warmup"):
        AmcConfig(episodes=5, warmup=6)
    with pytest.raises(ConfigError, match="min_keep"):
        AmcConfig(min_keep=1.5)


def test_a_bops_budget_with_fixed_8_bit_layers_is_met_by_every_episode() -> None:
    torch.manual_seed(0)
    comp = Compressor(
        conv_stack((16, 32, 32)),
        EXAMPLE,
        "bops=0.03",
        method="amc",
        evaluator=kept_weight_share,
        episodes=6,
        warmup=2,
        hidden=16,
    )
    method = comp.method
    assert comp.bits == 8  # a BOPs budget quantizes every layer; the agent prunes the rest of the way
    method.search()
    for record in method.episodes:
        assert method.subnets.price(record["counts"]) <= method.target * (1 + 1e-9)
    comp.calibration = [torch.randn(4, 3, 16, 16)]
    exported = comp.export()
    assert exported.cost["bops"] <= 0.03 * exported.dense_cost["bops"] * (1 + 1e-9)


def test_amc_evolution_and_knapsack_work_on_a_transformer_with_heads_and_neurons() -> None:
    import torch.nn.functional as F

    import netdiet

    torch.manual_seed(0)
    bert = netdiet.zoo.build("bert", vocab_size=60, hidden=32, intermediate=64, heads=4, layers=2)
    example = (torch.randint(1, 60, (1, 12)),)
    probe = torch.randint(1, 60, (8, 12))

    def score(model: nn.Module) -> float:
        with torch.no_grad():
            return float(model(probe).abs().mean())

    for method, options in (
        ("amc", {"episodes": 5, "warmup": 2, "hidden": 16}),
        (
            "evolution",
            {
                "population": 6,
                "parents": 2,
                "mutations": 2,
                "crossovers": 2,
                "generations": 2,
                "predictor_samples": 8,
            },
        ),
        ("knapsack", {"pruning_steps": 2}),
    ):
        comp = Compressor(bert, example, "flops=0.5", method=method, evaluator=score, **options)
        kinds = {g.kind for g in comp.space.groups}
        assert {"head", "neuron"} <= kinds
        if method == "knapsack":
            comp.begin(4)
            for _ in range(4):
                loss = F.cross_entropy(comp.model(probe), torch.zeros(8, dtype=torch.long))
                loss.backward()
                comp.step(float(loss.detach()))
        exported = comp.export()
        assert exported.cost["flops"] <= 0.5 * exported.dense_cost["flops"] * (1 + 1e-9), method
        assert sum(exported.summary()["kept"].values()) < sum(g.size for g in comp.space.groups)
