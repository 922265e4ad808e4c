"""The `geta` method: bit bounds after every step (adversarial gradients included), the stage schedule,
the forgetting of redundant units, the budget, resume mid-stage, and its configuration errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netdiet
from netdiet.compressor import Compressor
from netdiet.cost import price
from netdiet.errors import ConfigError
from netdiet.methods import Budget
from netdiet.methods.geta import Geta, GetaConfig
from small_models import conv_stack


def small_cnn() -> nn.Module:
    return conv_stack((16, 32, 32))


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)
    ]


EXAMPLE = (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)),)


def compressor(budget: str = "bops=0.03", total: int = 40, **config: Any) -> Compressor:
    comp = Compressor(small_cnn(), EXAMPLE, budget, method="geta", **config)
    comp.begin(total)
    return comp


def train(
    comp: Compressor,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    opt: torch.optim.Optimizer,
    adversarial: bool = False,
    check: Any = None,
) -> None:
    model = comp.model.train()
    gen = torch.Generator().manual_seed(7)
    for x, y in data:
        loss = F.cross_entropy(model(x), y) + comp.penalty()
        opt.zero_grad()
        loss.backward()
        if adversarial:  # every other step, push all bit widths far up, then far down, plus noise
            up = len(comp.method.trace) % 2 == 0  # type: ignore[attr-defined]
            for name, p in model.named_parameters():
                noise = torch.randn(p.shape, generator=gen) * 1e2
                if name.endswith(".q_m"):
                    p.grad = noise - (1e4 if up else 0.0)
                elif name.endswith(".d"):
                    p.grad = noise * 1e-3 - (0.0 if up else 1e4)
        opt.step()
        comp.step(float(loss.detach()))
        if check is not None:
            check(comp.method)


def bits_within_bounds(method: Geta) -> None:
    for name, b in method.bit_widths().items():
        kind = name.split(":", 1)[0]
        low = method.final_bounds[kind][0]
        assert low - 1e-3 <= b <= method.b_max(kind) + 1e-3, (name, b, method.b_max(kind), method.steps)
        assert method.b_max(kind) >= low


def test_bounds_hold_after_every_step_under_adversarial_gradients() -> None:
    comp = compressor(total=30, weight_bits=(3, 6), act_bits=(4, 8), observe_steps=2)
    opt = torch.optim.SGD(comp.model.parameters(), lr=1.0)
    seen: list[dict[str, float]] = []
    train(
        comp,
        batches(30),
        opt,
        adversarial=True,
        check=lambda m: (bits_within_bounds(m), seen.append(m.bit_widths())),
    )
    method = comp.method
    assert isinstance(method, Geta)
    assert len(seen) == 30 and method.max_bound_violation <= 1e-3
    # the adversary reached both ends: some quantizer sat at b_min and some at the bound of its step
    flat = [b for step in seen for k, b in step.items() if k.startswith("weight:")]
    assert min(flat) == pytest.approx(3, abs=1e-3)
    assert max(flat) == pytest.approx(16, abs=1e-3)  # warm-up bound is init_bits
    # cool-down: bits frozen at whole values
    assert all(abs(b - round(b)) < 1e-3 for b in seen[-1].values())
    assignment = method.read_off()
    for kid, value in assignment.items():
        if kid.startswith("weight_bits:"):
            assert 3 <= value <= 6
        if kid.startswith("act_bits:"):
            assert 4 <= value <= 8


def test_b_max_falls_from_init_bits_to_the_final_bound_and_never_below_b_min() -> None:
    comp = compressor(total=100, weight_bits=(4, 6), act_bits=(8, 8), bit_share=0.0)
    method = comp.method
    assert isinstance(method, Geta)
    series = [method.b_max("weight", s) for s in range(0, 101)]
    assert series[:11] == [16.0] * 11  # warm-up (10 steps)
    assert series[30:] == [6.0] * 71  # from the end of the projection (step 30)
    assert all(a >= b for a, b in zip(series, series[1:]))  # monotone
    assert series[20] == pytest.approx(16 + (6 - 16) * 10 / 20)
    assert min(method.b_max("act", s) for s in range(101)) == 8.0


def test_each_stage_and_pruning_period_starts_at_its_step() -> None:
    comp = compressor(total=100)
    method = comp.method
    assert isinstance(method, Geta)
    stages = [method.stage(s) for s in range(1, 101)]
    assert stages[:10] == ["warmup"] * 10
    assert stages[10:30] == ["projection"] * 20
    assert stages[30:80] == ["joint"] * 50
    assert stages[80:] == ["cooldown"] * 20
    periods = [method.period_of(s) for s in range(31, 81)]
    assert [periods.index(k) + 31 for k in range(5)] == [31, 41, 51, 61, 71]
    train(comp, batches(100), torch.optim.SGD(comp.model.parameters(), lr=0.01))
    trace = method.trace
    assert [t["stage"] for t in trace] == stages
    redundant = [t["redundant_units"] for t in trace]
    assert redundant[29] == 0 and redundant[30] > 0  # the first period chooses at step 31
    assert all(a <= b for a, b in zip(redundant, redundant[1:]))  # once redundant, always


def test_redundant_units_are_forgotten_to_zero_and_the_budget_is_met() -> None:
    comp = compressor("bops=0.02", total=50)
    train(comp, batches(50), torch.optim.SGD(comp.model.parameters(), lr=0.05, momentum=0.9))
    method = comp.method
    assert isinstance(method, Geta)
    assert any(method.redundant.values())
    plain = method.weights_for_export(None)
    for group in method.space.groups:
        units = sorted(method.redundant[group.name])
        conv = dict(plain.named_parameters())[group.members[0].param]
        if units and group.members[0].dim == 0:
            assert torch.count_nonzero(conv.detach()[units]) == 0
    assignment = method.read_off()
    cost = float(price(method.space, assignment).bops)
    dense = float(price(method.space).bops)
    assert cost <= 0.02 * dense * (1 + 1e-9)
    comp.calibration = [x for x, _ in batches(2, seed=9)]
    exported = comp.export()  # physically pruned, quantized at the read-off bits
    kept = {kid: len(v) for kid, v in assignment.items() if kid.startswith("keep:")}
    assert sum(kept.values()) < sum(g.size for g in method.space.groups)
    assert exported.cost["bops"] <= 0.02 * exported.dense_cost["bops"] * (1 + 1e-9)


def test_the_exported_model_equals_the_masked_fake_quant_model_within_one_step() -> None:
    from netdiet.export import mask_model
    from netdiet.export.handlers import quantize_exported
    from netdiet.export.int8 import one_step_bound
    from netdiet.quant.attach import quantized_layers

    comp = compressor("bops=0.02", total=50)
    train(comp, batches(50), torch.optim.SGD(comp.model.parameters(), lr=0.05, momentum=0.9))
    method = comp.method
    calibration = [x for x, _ in batches(3, seed=9)]
    comp.calibration = calibration
    exported = comp.export()
    own = method.read_off()
    assert any(len(v) < g.size for g in method.space.groups for k, v in own.items() if k == f"keep:{g.name}")
    # the reference: the full-size model with the redundant units zeroed, quantized at the same bits
    masked = mask_model(method.space, own.keep, source=method.weights_for_export(own))
    bits_only = {k: v for k, v in exported.assignment.items() if k.startswith(("weight_bits:", "act_bits:"))}
    reference = quantize_exported(method.space, netdiet.space.Assignment(bits_only), masked, calibration)
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want = exported.model.eval()(x), reference.eval()(x)
    step = one_step_bound(exported.model, quantized_layers(exported.model))
    assert step > 0
    assert float((got - want).abs().max()) <= step
    assert (got.argmax(1) == want.argmax(1)).float().mean() >= 0.9
    # and the exported model has fewer channels, not zeros: it is physically pruned
    n_params = sum(p.numel() for p in exported.model.parameters())
    assert n_params < sum(p.numel() for p in small_cnn().parameters())


def _run(total: int, stop: int | None = None) -> tuple[Compressor, list[Any]]:
    comp = compressor("bops=0.02", total=total, observe_steps=3)
    opt = torch.optim.SGD(comp.model.parameters(), lr=0.05, momentum=0.9)
    data = batches(total)
    if stop is None:
        train(comp, data, opt)
        return comp, data
    train(comp, data[:stop], opt)
    saved = {
        "model": copy.deepcopy(comp.model.state_dict()),
        "opt": copy.deepcopy(opt.state_dict()),
        "method": copy.deepcopy(comp.method.state_dict()),  # type: ignore[attr-defined]
    }
    resumed = compressor("bops=0.02", total=total, observe_steps=3)
    resumed.method.load_state_dict(saved["method"])  # type: ignore[attr-defined]
    resumed.model.load_state_dict(saved["model"])
    opt2 = torch.optim.SGD(resumed.model.parameters(), lr=0.05, momentum=0.9)
    opt2.load_state_dict(saved["opt"])
    train(resumed, data[stop:], opt2)
    return resumed, data


@pytest.mark.parametrize("stop", [5, 24, 33])  # warm-up, projection, mid pruning period (joint)
def test_resume_mid_stage_gives_the_uninterrupted_result(stop: int) -> None:
    whole, _ = _run(40)
    resumed, _ = _run(40, stop)
    a, b = whole.method.read_off(), resumed.method.read_off()
    assert set(a) == set(b)
    for kid in a:
        va, vb = a[kid], b[kid]
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), kid
        else:
            assert va == vb, kid
    for (n1, p1), (n2, p2) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert n1 == n2
        assert torch.allclose(p1.float(), p2.float(), atol=1e-6), n1


def test_a_tight_budget_lowers_the_final_weight_bound_first() -> None:
    comp = compressor("bops=0.004", total=10, weight_bits=(2, 8), act_bits=(4, 8))
    method = comp.method
    assert isinstance(method, Geta)
    w_low, w_high = method.final_bounds["weight"]
    assert w_high < 8 and w_low == 2
    with pytest.raises(ConfigError, match="smallest reachable"):
        compressor("bops=0.0001", total=10, weight_bits=(6, 8), act_bits=(8, 8))


@pytest.mark.parametrize(
    "config, message",
    [
        ({"weight_bits": (1, 8)}, "2 <= b_min"),
        ({"weight_bits": (8, 4)}, "b_min <= b_max"),
        ({"act_bits": (8, 12), "init_bits": 10}, "above init_bits"),
        ({"warmup_fraction": 0.6, "joint_fraction": 0.6}, "sum to at most 1"),
        ({"pruning_periods": 0}, "pruning_periods"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GetaConfig(**config)


def test_geta_learns_bits_so_fixed_bits_are_refused() -> None:
    with pytest.raises(ConfigError, match="learns every layer's bit width"):
        Compressor(small_cnn(), EXAMPLE, "bops=0.05", method="geta", bits=8)


def test_geta_needs_the_run_length() -> None:
    comp = Compressor(small_cnn(), EXAMPLE, Budget(bops=0.05), method="geta")
    with pytest.raises(ConfigError, match="begin"):
        comp.penalty()


def test_compress_with_geta_exports_mixed_bits_that_run_as_int8() -> None:
    pytest.importorskip("onnxruntime")
    from netdiet.data import DataSpec, build_data
    from netdiet.train import TrainConfig

    digits = build_data(DataSpec("digits", batch_size=64, image_size=16))
    torch.manual_seed(0)
    model = netdiet.zoo.build("resnet20", widths=[8, 16, 32])
    result = netdiet.compress(
        model,
        digits.train,
        "bops=0.03",
        method="geta",
        epochs=1,
        finetune_epochs=0.3,
        train_config=TrainConfig(lr=0.02, progress=False),
        latency_batches=(1,),
        progress=False,
    )
    report = result.report
    assert report["compressed"]["bops"] <= 0.03 * report["dense"]["bops"] * (1 + 1e-9)
    assert report["quantized"] == "before the fine-tune"  # trained with quantizers: QAT, not float
    weight_bits = {v for k, v in result.exported.assignment.items() if k.startswith("weight_bits:")}
    assert weight_bits and all(4 <= b <= 8 for b in weight_bits)
    assert report["int8_onnx"]["int8_kernels"]["QLinearConv"] == 19 + 2  # every conv on int8 kernels
    assert report["dynamics"]["stage_starts"]["cooldown"] > report["dynamics"]["stage_starts"]["joint"]


def test_the_optimizer_wrapper_steps_the_method_and_lr_schedulers_keep_working() -> None:
    manual = compressor("bops=0.02", total=20, observe_steps=2)
    opt = torch.optim.SGD(manual.model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    for x, y in batches(20):
        loss = F.cross_entropy(manual.model(x), y) + manual.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        manual.step()
        sched.step()

    wrapped = compressor("bops=0.02", total=20, observe_steps=2)
    inner = torch.optim.SGD(wrapped.model.parameters(), lr=0.05, momentum=0.9)
    opt2 = wrapped.wrap_optimizer(inner)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=5, gamma=0.5)
    for x, y in batches(20):
        loss = F.cross_entropy(wrapped.model(x), y) + wrapped.penalty()
        opt2.zero_grad()
        loss.backward()
        opt2.step()
        sched2.step()
    assert wrapped.method_steps == 20
    assert inner.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**4)  # the scheduler reached the inner one
    for (n, a), b in zip(manual.model.state_dict().items(), wrapped.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), n
    state = wrapped.state_dict()
    assert state["method"] == "geta" and state["state"]["steps"] == 20
    other = Compressor(small_cnn(), EXAMPLE, "flops=0.5", method="uniform")
    with pytest.raises(ConfigError, match="cannot be resumed mid-run"):
        other.state_dict()


def test_bits_take_their_share_of_the_budget_and_a_flops_budget_keeps_b_max() -> None:
    half = compressor("bops=0.05", total=10, weight_bits=(4, 8), bit_share=0.5).method
    none = compressor("bops=0.05", total=10, weight_bits=(4, 8), bit_share=0.0).method
    all_bits = compressor("bops=0.05", total=10, weight_bits=(4, 8), bit_share=1.0).method
    assert none.final_bounds["weight"] == (4, 8)
    # 0.05 of fp32 from 0.0625 at 8 bits: half the log-reduction is 8 * 0.8**0.5 = 7.2 -> 7 bits
    assert half.final_bounds["weight"] == (4, 7)
    assert all_bits.final_bounds["weight"] == (4, 6)  # 6 bits alone reach 0.047
    flops = compressor("flops=0.5", total=10, weight_bits=(4, 8), bit_share=1.0).method
    assert flops.final_bounds["weight"] == (4, 8)  # bits do not change FLOPs
    with pytest.raises(ConfigError, match="bit_share"):
        GetaConfig(bit_share=1.5)
