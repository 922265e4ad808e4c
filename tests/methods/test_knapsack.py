"""`knapsack`: the multiple-choice knapsack is solved optimally (a hand-checked instance and brute
force), pruning events happen at their steps and tighten towards the budget, pruned units stay zero,
the read-off meets the budget, resume mid-run matches an uninterrupted run."""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from netdiet.compressor import Compressor
from netdiet.errors import ConfigError
from netdiet.methods.knapsack import Knapsack, KnapsackConfig, solve_choice_knapsack
from small_models import conv_stack

EXAMPLE = (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)),)


def test_a_hand_checked_instance_is_solved_optimally() -> None:
    # three groups; by hand: (a1, b0, c2) costs 3 + 1 + 5 = 9 <= 10 with value 6 + 2 + 9 = 17; every other
    # choice within 10 is worth less, e.g. (a2, b0, c1) = 9 + 2 + 5 = 16 at cost 6 + 1 + 3 = 10
    values = [[1, 6, 9], [2, 4], [0, 5, 9]]
    costs = [[1, 3, 6], [1, 4], [0, 3, 5]]
    assert solve_choice_knapsack(values, costs, 10) == [1, 0, 2]
    assert solve_choice_knapsack(values, costs, 2) == [0, 0, 0]
    with pytest.raises(ConfigError, match="capacity"):
        solve_choice_knapsack(values, costs, 1.5)


def test_random_instances_match_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(20):
        groups = rng.randint(2, 4)
        values = [[rng.uniform(0, 10) for _ in range(rng.randint(1, 4))] for _ in range(groups)]
        costs = [[rng.uniform(0, 5) for _ in v] for v in values]
        capacity = rng.uniform(sum(min(c) for c in costs), sum(max(c) for c in costs))
        pick = solve_choice_knapsack(values, costs, capacity)
        best = max(
            sum(v[i] for v, i in zip(values, choice))
            for choice in itertools.product(*[range(len(v)) for v in values])
            if sum(c[i] for c, i in zip(costs, choice)) <= capacity
        )
        assert sum(c[i] for c, i in zip(costs, pick)) <= capacity + 1e-9
        assert sum(v[i] for v, i in zip(values, pick)) == pytest.approx(best, rel=1e-6)


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)
    ]


def knapsack(budget: str = "flops=0.35", total: int = 30, **config: Any) -> Compressor:
    torch.manual_seed(0)
    comp = Compressor(conv_stack((16, 32, 32)), EXAMPLE, budget, method="knapsack", **config)
    comp.begin(total)
    return comp


def train(comp: Compressor, data: list[Any], opt: torch.optim.Optimizer) -> None:
    for x, y in data:
        loss = F.cross_entropy(comp.model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        comp.step(float(loss.detach()))


def test_events_tighten_to_the_budget_pruned_units_stay_zero_and_the_model_is_not_touched() -> None:
    user = conv_stack((16, 32, 32))
    before = copy.deepcopy(user.state_dict())
    comp = Compressor(user, EXAMPLE, "flops=0.35", method="knapsack", pruning_steps=4, prune_fraction=0.5)
    comp.begin(40)
    method = comp.method
    assert isinstance(method, Knapsack)
    assert [method.event_step(k) for k in (1, 2, 3, 4)] == [5, 10, 15, 20]
    train(comp, batches(40), torch.optim.SGD(comp.model.parameters(), lr=0.05, momentum=0.9))
    events = [t["events"] for t in method.trace]
    assert events[3] == 0 and events[4] == 1 and events[19] == 4 and events[-1] == 4
    ratios = [method.trace[s - 1]["cost_ratio"] for s in (5, 10, 15, 20)]
    assert all(a > b for a, b in zip(ratios, ratios[1:]))  # each event closer to the budget
    assert ratios[-1] <= 0.35 * (1 + 1e-9) and ratios[0] > 0.35
    params = dict(comp.model.named_parameters())
    for group in method.space.groups:
        dropped = sorted(set(range(group.size)) - set(method.kept[group.name]))
        member = group.members[0]
        if dropped and member.dim == 0:
            assert torch.count_nonzero(params[member.param].detach()[dropped]) == 0
    exported = comp.export()
    assert exported.cost["flops"] <= 0.35 * exported.dense_cost["flops"] * (1 + 1e-9)
    for k, v in user.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_params_budget_and_a_read_off_before_the_last_event() -> None:
    comp = knapsack("params=0.3", total=30, pruning_steps=3, prune_fraction=1.0)
    train(comp, batches(12), torch.optim.SGD(comp.model.parameters(), lr=0.05))
    assert comp.method.events == 1  # stopped early: the read-off prunes to the budget itself
    exported = comp.export()
    assert exported.cost["params"] <= 0.3 * exported.dense_cost["params"] * (1 + 1e-9)


@pytest.mark.parametrize("stop", [7, 16])
def test_resume_mid_run_gives_the_uninterrupted_result(stop: int) -> None:
    data = batches(30)
    whole = knapsack(pruning_steps=5)
    opt = torch.optim.SGD(whole.model.parameters(), lr=0.05, momentum=0.9)
    train(whole, data, opt)

    first = knapsack(pruning_steps=5)
    opt1 = torch.optim.SGD(first.model.parameters(), lr=0.05, momentum=0.9)
    train(first, data[:stop], opt1)
    saved = copy.deepcopy((first.model.state_dict(), opt1.state_dict(), first.state_dict()))
    resumed = knapsack(pruning_steps=5)
    resumed.model.load_state_dict(saved[0])
    opt2 = torch.optim.SGD(resumed.model.parameters(), lr=0.05, momentum=0.9)
    opt2.load_state_dict(saved[1])
    resumed.load_state_dict(saved[2])
    train(resumed, data[stop:], opt2)
    assert resumed.method.kept == whole.method.kept
    for (n, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), n


def test_knapsack_needs_the_run_length_and_refuses_bad_configs() -> None:
    comp = Compressor(conv_stack((16, 32, 32)), EXAMPLE, "flops=0.5", method="knapsack")
    with pytest.raises(ConfigError, match="begin"):
        comp.step(1.0)
    with pytest.raises(ConfigError, match="pruning_steps"):
        KnapsackConfig(pruning_steps=0)
    with pytest.raises(ConfigError, match="prune_fraction"):
        KnapsackConfig(prune_fraction=0.0)
