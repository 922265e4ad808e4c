"""The two interpolants of a table grid: exact on grid points, agreeing off them, differentiable, clamped."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from netdiet.cost.latency import Grid, interpolate, interpolate_torch


def two_axis() -> Grid:
    """Uneven spacing and values that are not bilinear, so a wrong cell or weight shows."""
    rng = np.random.default_rng(0)
    ins, outs = [1, 8, 16, 40], [1, 4, 12, 20, 64]
    ms = (0.05 + rng.random((len(ins), len(outs)))).round(4).tolist()
    return Grid(ins, outs, ms)


def depthwise() -> Grid:
    return Grid([1, 8, 16, 24, 48], None, [0.02, 0.05, 0.11, 0.13, 0.4])


def frozen_in() -> Grid:  # the model input: 3 channels, never pruned
    return Grid([3], [1, 8, 16, 32], [[0.1, 0.3, 0.35, 0.9]])


def frozen_out() -> Grid:  # a classifier: 10 outputs, never pruned
    return Grid([1, 16, 32, 64], [10], [[0.01], [0.04], [0.05], [0.2]])


def both_frozen() -> Grid:
    return Grid([3], [10], [[0.7]])


GRIDS = {
    "two_axis": two_axis,
    "depthwise": depthwise,
    "frozen_in": frozen_in,
    "frozen_out": frozen_out,
    "both_frozen": both_frozen,
}


def grid_points(g: Grid) -> list[tuple[int, int, float]]:
    if g.out_points is None:
        return [(p, p, g.ms[i]) for i, p in enumerate(g.in_points)]
    return [
        (p, q, g.ms[i][j])
        for (i, p), (j, q) in itertools.product(enumerate(g.in_points), enumerate(g.out_points))
    ]


def torch_value(g: Grid, c_in: float, c_out: float) -> float:
    c_in_t = torch.tensor(float(c_in), dtype=torch.float64)
    c_out_t = torch.tensor(float(c_out), dtype=torch.float64)
    return float(interpolate_torch(g, c_in_t, c_out_t))


@pytest.mark.parametrize("name", list(GRIDS))
def test_both_interpolants_are_exact_on_every_grid_point(name: str) -> None:
    g = GRIDS[name]()
    points = grid_points(g)
    assert len(points) == len(g.in_points) * (1 if g.out_points is None else len(g.out_points))
    for c_in, c_out, expected in points:
        assert interpolate(g, c_in, c_out) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert torch_value(g, c_in, c_out) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_bilinear_in_a_cell_the_centre_is_the_mean_of_the_corners() -> None:
    g = two_axis()
    for i, j in itertools.product(range(len(g.in_points) - 1), range(len(g.out_points) - 1)):
        c_in = (g.in_points[i] + g.in_points[i + 1]) / 2
        c_out = (g.out_points[j] + g.out_points[j + 1]) / 2
        corners = g.ms[i][j] + g.ms[i][j + 1] + g.ms[i + 1][j] + g.ms[i + 1][j + 1]
        assert interpolate(g, c_in, c_out) == pytest.approx(corners / 4, rel=1e-12)
        assert torch_value(g, c_in, c_out) == pytest.approx(corners / 4, rel=1e-12)


@pytest.mark.parametrize("name", list(GRIDS))
def test_scipy_and_torch_agree_off_the_grid(name: str) -> None:
    g = GRIDS[name]()
    rng = np.random.default_rng(1)
    hi_out = max(g.out_points) if g.out_points is not None else 1
    for _ in range(50):
        c_in = rng.uniform(1, max(g.in_points))
        c_out = rng.uniform(1, hi_out)
        assert torch_value(g, c_in, c_out) == pytest.approx(interpolate(g, c_in, c_out), rel=1e-10)


def test_torch_accepts_a_plain_number_beside_a_tensor_and_keeps_float32() -> None:
    g = frozen_out()
    c_in = torch.tensor(20.0, requires_grad=True)
    value = interpolate_torch(g, c_in, 10)
    assert value.dtype == torch.float32
    assert float(value.detach()) == pytest.approx(interpolate(g, 20.0, 10.0), rel=1e-6)
    value.backward()
    assert c_in.grad is not None and float(c_in.grad) == pytest.approx((0.05 - 0.04) / 16, rel=1e-5)


@pytest.mark.parametrize(
    "name, point",
    [
        ("two_axis", (11.3, 7.7)),
        ("two_axis", (30.0, 50.0)),
        ("two_axis", (2.5, 1.5)),
        ("depthwise", (19.0, 19.0)),
    ],
)
def test_torch_gradient_is_finite_and_matches_finite_differences(
    name: str, point: tuple[float, float]
) -> None:
    g = GRIDS[name]()
    c_in = torch.tensor(point[0], dtype=torch.float64, requires_grad=True)
    c_out = torch.tensor(point[1], dtype=torch.float64, requires_grad=True)
    value = interpolate_torch(g, c_in, c_out)
    value.backward()
    assert c_in.grad is not None and torch.isfinite(c_in.grad)
    h = 1e-4  # well inside the cell: the interpolant is bilinear there, so differences are exact
    d_in = (interpolate(g, point[0] + h, point[1]) - interpolate(g, point[0] - h, point[1])) / (2 * h)
    assert float(c_in.grad) == pytest.approx(d_in, rel=1e-6)
    assert float(c_in.grad) != 0.0
    if g.out_points is None:
        assert c_out.grad is None  # depthwise: one count, the out count is not read
    else:
        assert c_out.grad is not None and torch.isfinite(c_out.grad)
        d_out = (interpolate(g, point[0], point[1] + h) - interpolate(g, point[0], point[1] - h)) / (2 * h)
        assert float(c_out.grad) == pytest.approx(d_out, rel=1e-6)
        assert float(c_out.grad) != 0.0


@pytest.mark.parametrize("name", ["two_axis", "depthwise", "frozen_in", "frozen_out"])
def test_counts_outside_the_range_are_clamped(name: str) -> None:
    g = GRIDS[name]()
    lo_in, hi_in = g.in_points[0], g.in_points[-1]
    outs = g.out_points or g.in_points
    lo_out, hi_out = outs[0], outs[-1]
    for c_in, c_out, at_in, at_out in [
        (0.2, 0.5, lo_in, lo_out),
        (-5.0, -5.0, lo_in, lo_out),
        (hi_in * 3, hi_out * 3, hi_in, hi_out),
        (0.0, hi_out + 100, lo_in, hi_out),
    ]:
        if g.out_points is None:
            at_out = at_in
        expected = interpolate(g, at_in, at_out)
        assert interpolate(g, c_in, c_out) == pytest.approx(expected, rel=1e-12)
        t_in = torch.tensor(c_in, dtype=torch.float64, requires_grad=True)
        t_out = torch.tensor(c_out, dtype=torch.float64, requires_grad=True)
        value = interpolate_torch(g, t_in, t_out)
        assert float(value.detach()) == pytest.approx(expected, rel=1e-12)
        value.backward()
        assert t_in.grad is None or torch.isfinite(t_in.grad)
    # clamping is per axis: below the range on one axis, inside on the other
    if g.out_points is not None and len(g.in_points) > 1 and len(g.out_points) > 1:
        inside = (g.out_points[1] + g.out_points[2]) / 2
        assert interpolate(g, -3.0, inside) == pytest.approx(interpolate(g, lo_in, inside), rel=1e-12)
        assert interpolate(g, -3.0, inside) != pytest.approx(interpolate(g, lo_in, lo_out), rel=1e-6)
