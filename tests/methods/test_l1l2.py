"""The l1l2 method end to end on small models: surrogate, controller, read-off, export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netdiet
from netdiet.compressor import Compressor
from netdiet.errors import ConfigError
from netdiet.methods import Budget, L1L2Config


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 64),
        nn.ReLU(),
        nn.Linear(64, 4),
    )


def data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_surrogate_of_dense_model_equals_exact_flops() -> None:
    model = small_cnn()
    x, _ = data(2)
    comp = Compressor(model, (x,), Budget(flops=0.5))
    exact = netdiet.analyze(model, (x,)).cost().flops
    assert float(comp.method.surrogate().detach()) == pytest.approx(exact, rel=1e-6)
    assert exact == netdiet.measured_flops(model, (x,))


def test_user_model_is_not_modified_and_gates_not_in_model_parameters() -> None:
    model = small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, _ = data(2)
    comp = Compressor(model, (x,), "flops=0.5")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    gate_ids = {id(p) for p in comp.method.gates.parameters()}
    assert not gate_ids & {id(p) for p in comp.model.parameters()}
    # gates start at 1 and the gated copy computes what the original computes
    with torch.no_grad():
        torch.testing.assert_close(comp.model.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_controller_reaches_budget_in_a_handwritten_loop_and_export_meets_it(fraction: float) -> None:
    model = small_cnn()
    x, y = data(32)
    # a hardening phase and the gated weights kept (rewind=False): the fixed setting's units fade out
    comp = Compressor(model, (x[:2],), Budget(flops=fraction), total_steps=60, rewind=False)
    opt = torch.optim.SGD(comp.model.parameters(), lr=0.01, momentum=0.9)
    ratios = []
    for _ in range(60):
        loss = F.cross_entropy(comp.model(x), y) + comp.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        comp.step(loss.item())
        ratios.append(comp.status()["surrogate"] / comp.status()["dense"])
    assert ratios[-1] < ratios[0]  # the penalty shrank the relaxed cost
    assert ratios[-1] < fraction * 1.5
    trace = comp.trace
    assert [t["step"] for t in trace] == list(range(1, 61))
    assert {t["phase"] for t in trace[:44]} == {"anneal"} and {t["phase"] for t in trace[45:]} == {"harden"}
    assert all(t["budget_ratio"] == pytest.approx(fraction) for t in trace)
    assert trace[0]["target_ratio"] < 1.0 and trace[-1]["target_ratio"] == pytest.approx(fraction)
    assert all(isinstance(t["loss"], float) for t in trace)
    result = comp.export()  # verified against the masked model inside
    exact = netdiet.measured_flops(result.model, (x[:2],))
    dense = netdiet.measured_flops(model, (x[:2],))
    assert fraction * 0.99 * dense <= exact <= fraction * dense
    assert result.cost["flops"] == pytest.approx(exact, rel=1e-9)
    assert result.model(x).shape == (32, 4)


@pytest.mark.parametrize("method", ["uniform", "magnitude"])
def test_baselines_meet_the_budget_in_the_same_interface(method: str) -> None:
    model = small_cnn()
    x, _ = data(2)
    comp = Compressor(model, (x,), Budget(flops=0.5), method=method)
    assert float(comp.penalty()) == 0.0
    result = comp.export()
    dense = netdiet.measured_flops(model, (x,))
    flops = netdiet.measured_flops(result.model, (x,))
    assert flops <= 0.5 * dense
    if method == "magnitude":
        assert flops >= 0.49 * dense


def test_infeasible_budget_is_refused_with_the_minimum_reachable_cost() -> None:
    model = small_cnn()
    x, _ = data(2)
    with pytest.raises(ConfigError, match="smallest reachable flops is"):
        Compressor(model, (x,), Budget(flops=1e-4))


def test_low_rank_layer_is_exported_factorized_when_it_pays() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3))
    x = torch.randn(8, 64)
    comp = Compressor(model, (x,), Budget(flops=0.4), rewind=False)  # rank gates only on gated weights
    with torch.no_grad():  # make the middle layer's spectrum decay so a low rank is the obvious choice
        b = comp.method.gates.rank("2.weight")
        b.copy_(torch.logspace(0, -4, b.numel()))
    result = comp.export()
    assert "2" in result.factorized and result.factorized["2"] < 128
    assert isinstance(result.model[2], nn.Sequential)
    dense = netdiet.measured_flops(model, (x,))
    assert netdiet.measured_flops(result.model, (x,)) <= 0.4 * dense
    assert result.cost["flops"] == pytest.approx(netdiet.measured_flops(result.model, (x,)), rel=1e-9)


def test_save_and_load_round_trip_of_a_factorized_export(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3))
    x = torch.randn(8, 64)
    comp = Compressor(model, (x,), Budget(flops=0.4), rewind=False)  # rank gates only on gated weights
    with torch.no_grad():
        comp.method.gates.rank("2.weight").copy_(torch.logspace(0, -4, 256))
    result = comp.export()
    netdiet.save(result.model, tmp_path / "slim")
    again = netdiet.load(tmp_path / "slim", model)
    with torch.no_grad():
        torch.testing.assert_close(again(x), result.model(x))


def test_penalty_without_begin_names_total_steps_and_unknown_options_are_refused() -> None:
    model = small_cnn()
    x, _ = data(2)
    comp = Compressor(model, (x,), Budget(flops=0.5))
    with pytest.raises(ConfigError, match="total_steps"):
        comp.penalty()
    comp.begin(10)
    assert torch.isfinite(comp.penalty())
    with pytest.raises(ConfigError, match="at least one step"):
        comp.begin(0)
    with pytest.raises(ConfigError, match=r"no option\(s\) \['lambda_lr', 'warmup_steps'\]"):
        Compressor(model, (x,), Budget(flops=0.5), lambda_lr=0.5, warmup_steps=3)
    with pytest.raises(ConfigError, match="importance"):
        Compressor(model, (x,), Budget(flops=0.5), importance="random")


def test_unknown_gate_optimizer_is_refused() -> None:
    with pytest.raises(ConfigError, match="gate_optimizer"):
        L1L2Config(gate_optimizer="adamw")  # a typo must not silently train the gates with SGD


# ----- learned bits ---------------------------------------------------------------------------------


def test_l1l2_with_learned_bits_trades_bits_and_widths_against_one_budget() -> None:
    from netdiet.cost import price

    x, y = data(64)
    comp = Compressor(
        small_cnn(),
        (x[:1],),
        "bops=0.02",
        method="l1l2",
        learn_bits=True,
        weight_bits=(2, 8),
        act_bits=(4, 8),
    )
    comp.begin(40)
    method = comp.method
    opt = torch.optim.SGD(comp.model.parameters(), lr=0.05, momentum=0.9)
    seen: list[list[float]] = []
    for i in range(40):
        xb, yb = x[(i % 8) * 8 : (i % 8) * 8 + 8], y[(i % 8) * 8 : (i % 8) * 8 + 8]
        loss = F.cross_entropy(comp.model(xb), yb) + comp.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        comp.step(float(loss.detach()))
        widths = []
        for kind, _, q in method.bits.quantizers():
            low, high = method.bits.bounds[kind]
            b = float(q.bits().detach().max())
            assert low - 1e-3 <= b <= high + 1e-3  # bounds after every step
            widths.append(b)
        seen.append(widths)
    # the penalty priced the bits: some came down from 8 under the cost pressure
    assert min(seen[-1]) < 7.5
    assignment = comp.method.read_off()
    bits = {k: v for k, v in assignment.items() if "bits" in k}
    assert bits and all(2 <= v <= 8 for k, v in bits.items() if k.startswith("weight_bits:"))
    dense = float(price(method.space).bops)
    assert float(price(method.space, assignment).bops) <= 0.02 * dense * (1 + 1e-9)
    # widths were cut too: the budget is below what 8-bit weights and activations alone reach (0.0625)
    assert sum(len(v) for v in assignment.keep.values()) <= sum(g.size for g in method.space.groups)


def test_learned_bits_refuse_fixed_bits_and_bad_bounds() -> None:
    x, _ = data(2)
    with pytest.raises(ConfigError, match="learns every layer's bit width"):
        Compressor(small_cnn(), (x[:1],), "bops=0.05", method="l1l2", learn_bits=True, bits=8)
    with pytest.raises(ConfigError, match="weight_bits"):
        L1L2Config(learn_bits=True, weight_bits=(8, 4))
