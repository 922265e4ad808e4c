"""S(a), the budget parser and the dual-ascent controller."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from netdiet.errors import ConfigError
from netdiet.methods import Budget, relaxed_count
from netdiet.methods.controller import DualAscent
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
    ],
)
def test_bad_budget_strings_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Budget.parse(text)


def test_budget_needs_exactly_one_metric() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        Budget()
    with pytest.raises(ConfigError, match="exactly one"):
        Budget(flops=0.5, params=0.5)


def test_dual_ascent_grows_above_target_and_decays_below_after_warmup() -> None:
    c = DualAscent(lr=0.1, warmup_steps=2)
    assert c.update(2.0) == 0.0 and c.update(2.0) == 0.0  # warm-up
    assert c.update(2.0) == pytest.approx(0.1)
    assert c.update(3.0) == pytest.approx(0.3)
    assert c.update(0.5) == pytest.approx(0.25)
    for _ in range(20):
        c.update(0.0)
    assert c.lam == 0.0
