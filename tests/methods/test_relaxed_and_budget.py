"""S(a), the budget parser, the cost schedule and the penalty controller."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from netdiet.errors import ConfigError
from netdiet.methods import Budget, relaxed_count
from netdiet.methods.controller import CostSchedule, PenaltyController
from netdiet.methods.relaxed import readoff_threshold

gates = st.lists(st.floats(min_value=0.0, max_value=10.0, allow_nan=False), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(gates, st.floats(min_value=1e-3, max_value=1e3))
def test_relaxed_count_is_bounded_by_count_and_scale_invariant(values: list[float], scale: float) -> None:
    a = torch.tensor(values, dtype=torch.float64)
    if float(a.pow(2).sum()) * min(scale, 1.0) ** 2 < 1e-4:
        return  # S(a) divides by ||a||^2 + 1e-12: invariance holds away from the all-zero vector
    s = relaxed_count(a)
    nonzero = int((a > 0).sum())
    assert 1.0 - 1e-9 <= float(s) <= nonzero + 1e-9
    assert float(relaxed_count(a * scale)) == pytest.approx(float(s), rel=1e-6)


def test_relaxed_count_equals_count_for_equal_gates_and_threshold_splits_small_ones() -> None:
    assert float(relaxed_count(torch.ones(7))) == pytest.approx(7.0)
    a = torch.tensor([1.0, 1.0, 1.0, 0.01, 0.02])
    t = readoff_threshold(a)
    assert int((a >= t).sum()) == 3
    assert 3.0 < float(relaxed_count(a)) < 3.1


def test_relaxed_count_has_finite_gradients() -> None:
    a = torch.tensor([1.0, 0.5, 0.0, 2.0], requires_grad=True)
    relaxed_count(a).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


@pytest.mark.parametrize(
    "text, metric, value",
    [
        ("flops=0.5", "flops", 0.5),
        ("flops=40M", "flops", 40e6),
        ("params = 0.3", "params", 0.3),
        ("bops=2G", "bops", 2e9),
    ],
)
def test_budget_parse(text: str, metric: str, value: float) -> None:
    b = Budget.parse(text)
    assert b.metric == metric and b.value == pytest.approx(value)
    assert b.target(100.0) == pytest.approx(value * 100.0 if value <= 1 else value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("flops", "METRIC=VALUE"),
        ("speed=0.5", "unknown budget metric"),
        ("flops=-1", "positive"),
        ("flops=0", "positive"),
        ("flops=1.5", "above 1, so it is not a fraction.*flops=1.5 or flops_abs=1.5"),
        ("params=300000", "params=300k or params_abs=300000"),
        ("latency_abs=0.5", "always a fraction"),
    ],
)
def test_bad_budget_strings_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Budget.parse(text)


@pytest.mark.parametrize(
    "text", ["flops=40M", "flops_abs=4e7", "params_abs=12345", "weight_bytes=1.5M", "flops=0.3"]
)
def test_budget_strings_round_trip_and_say_whether_absolute(text: str) -> None:
    b = Budget.parse(text)
    assert Budget.parse(str(b)) == b
    assert b.relative == (text == "flops=0.3")
    assert b.target(1000.0) == pytest.approx(300.0 if b.relative else b.value)


def test_python_budget_above_one_needs_absolute() -> None:
    with pytest.raises(ConfigError, match="absolute=True"):
        Budget(flops=40e6)
    b = Budget(flops=40e6, absolute=True)
    assert not b.relative and b.to_dict() == {"flops_abs": 40e6} and b.target(1e9) == 40e6


def test_budget_needs_exactly_one_metric() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        Budget()
    with pytest.raises(ConfigError, match="exactly one"):
        Budget(flops=0.5, params=0.5)


@pytest.mark.parametrize("total", [2, 3, 7, 20, 100, 601])
@pytest.mark.parametrize("budget", [0.3, 0.5, 0.9])
def test_cost_schedule_starts_dense_ends_at_budget_monotone_and_fades_to_zero(
    total: int, budget: float
) -> None:
    s = CostSchedule(budget, anneal_fraction=0.5, harden_fraction=0.25)
    assert s.target_ratio(0, total) == 1.0
    targets = [s.target_ratio(k, total) for k in range(total + 1)]
    assert all(b <= a for a, b in zip(targets, targets[1:]))  # never rises
    assert all(budget - 1e-12 <= t <= 1.0 for t in targets)
    anneal = s.anneal_steps(total)
    assert 1 <= anneal <= total
    assert all(
        t == pytest.approx(budget, abs=1e-12) for t in targets[anneal:]
    )  # the budget from the anneal's end
    start = s.harden_start(total)
    assert anneal <= start <= total
    fades = [s.fade(k, total) for k in range(total + 1)]
    assert all(f == 1.0 for f in fades[:start])  # untouched before hardening
    assert all(b <= a for a, b in zip(fades, fades[1:]))
    assert all(0.0 <= f <= 1.0 for f in fades)
    assert fades[total] == 0.0  # the dropped gates are exactly 0 at the last step


def test_cost_schedule_is_cubic_and_a_budget_above_dense_stays_at_dense() -> None:
    s = CostSchedule(0.5, anneal_fraction=0.5, harden_fraction=0.25)
    assert s.anneal_steps(100) == 50 and s.harden_start(100) == 75
    assert s.target_ratio(25, 100) == pytest.approx(0.5 + 0.5 * 0.5**3)
    assert CostSchedule(0.5, 1.0, 0.0).harden_start(10) == 10  # no hardening phase
    assert all(CostSchedule(1.5).target_ratio(k, 10) == 1.0 for k in range(11))


@pytest.mark.parametrize("anneal, harden", [(0.0, 0.25), (1.5, 0.0), (0.5, -0.1), (0.5, 1.0), (0.8, 0.3)])
def test_cost_schedule_refuses_bad_fractions(anneal: float, harden: float) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        CostSchedule(0.5, anneal, harden)
    with pytest.raises(ConfigError, match="budget ratio"):
        CostSchedule(0.0)


def test_penalty_controller_sign_follows_the_error_and_calibrate_scales() -> None:
    c = PenaltyController(kp=2.0, ki=0.5)
    assert not c.calibrated and c.update(2.0) == 0.0  # no lambda before calibration
    c.calibrate(task_grad_norm=3.0, penalty_grad_norm=1.5)
    assert c.calibrated and c.scale == pytest.approx(2.0)
    assert c.update(1.2) == pytest.approx(2.0 * (2.0 * 0.2 + 0.5 * 0.2))  # above target: lambda > 0
    assert c.lam > 0
    c2 = PenaltyController(kp=2.0, ki=0.5)
    c2.calibrate(3.0, 1.5)
    assert c2.update(0.8) < 0  # below target: lambda < 0, pushing the cost back up
    assert c2.update(1.0) < 0  # on target: only the (negative) integral is left
    assert c2.update(1.0) == pytest.approx(c2.scale * c2.integral)
    # the same error under a larger measured scale gives a proportionally larger lambda
    big = PenaltyController(kp=2.0, ki=0.5)
    big.calibrate(30.0, 1.5)
    assert big.update(1.2) == pytest.approx(10 * c.lam, rel=1e-9)
    # `dt` (the step as a fraction of the anneal) scales only the integral's increment
    slow = PenaltyController(kp=2.0, ki=0.5)
    slow.calibrate(3.0, 1.5)
    assert slow.update(1.2, dt=0.1) == pytest.approx(2.0 * (2.0 * 0.2 + 0.5 * 0.2 * 0.1))
    assert slow.integral == pytest.approx(0.5 * 0.2 * 0.1)
    # degenerate measurements fall back to unit scale
    for t, p in [(1.0, 0.0), (0.0, 1.0), (float("nan"), 1.0)]:
        d = PenaltyController()
        d.calibrate(t, p)
        assert d.scale == 1.0


def test_penalty_controller_integral_is_clamped_and_state_round_trips() -> None:
    c = PenaltyController(kp=0.0, ki=1.0)
    c.calibrate(1.0, 1.0)
    for _ in range(100):
        c.update(100.0)  # error clipped to 1, integral to 10
    assert c.lam == pytest.approx(10.0)
    state = c.state_dict()
    d = PenaltyController(kp=0.0, ki=1.0)
    d.load_state_dict(state)
    assert d.state_dict() == state and d.calibrated
    assert d.update(0.5) == pytest.approx(c.update(0.5))
    with pytest.raises(ConfigError, match="gains"):
        PenaltyController(kp=1.0, ki=0.0)
