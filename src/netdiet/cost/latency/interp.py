"""Piecewise-linear interpolation of a table entry: scipy for plain numbers, torch for the surrogate.

Both are exact on grid points and clamp counts into the measured range (counts never exceed the dense
size, and the grid always contains it). The torch version is differentiable in the counts, so the l1/l2
surrogate can put relaxed counts S(a) straight into a measured table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.interpolate import RegularGridInterpolator

from netdiet.cost.latency.table import Grid


def _axes(entry: Grid) -> tuple[list[list[int]], np.ndarray]:
    values = np.asarray(entry.ms, dtype=np.float64)
    axes = [entry.in_points] if entry.out_points is None else [entry.in_points, entry.out_points]
    return axes, values


def interpolate(entry: Grid, c_in: float, c_out: float) -> float:
    """Latency in ms at channel counts (c_in, c_out); depthwise entries read c_in only."""
    axes, values = _axes(entry)
    point = [c_in] if entry.out_points is None else [c_in, c_out]
    keep = [i for i, axis in enumerate(axes) if len(axis) > 1]  # one-point axes are constant
    index = tuple(slice(None) if i in keep else 0 for i in range(len(axes)))
    values = values[index]
    if not keep:
        return float(values)
    grid = [np.asarray(axes[i], dtype=np.float64) for i in keep]
    clamped = [min(max(float(point[i]), g[0]), g[-1]) for i, g in zip(keep, grid)]
    fn = entry.__dict__.get("_interpolator")  # read-off prices thousands of settings: build it once
    if fn is None:
        fn = RegularGridInterpolator(grid, values, method="linear")
        entry.__dict__["_interpolator"] = fn
    return float(fn(np.asarray([clamped]))[0])


def interpolate_torch(entry: Grid, c_in: Any, c_out: Any) -> torch.Tensor:
    """The same interpolant as `interpolate`, differentiable in tensor counts."""
    axes, values_np = _axes(entry)
    point = [c_in] if entry.out_points is None else [c_in, c_out]
    like = next((p for p in point if isinstance(p, torch.Tensor)), None)
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
    values = torch.as_tensor(values_np, dtype=dtype)
    weights_per_axis: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    for i, axis in enumerate(axes):
        if len(axis) == 1:
            values = values.select(i - (len(axes) - values.dim()), 0)
            continue
        grid = torch.as_tensor(axis, dtype=dtype)
        x = torch.as_tensor(point[i], dtype=dtype)
        x = torch.clamp(x, float(grid[0]), float(grid[-1]))
        idx = int(torch.clamp(torch.searchsorted(grid, x.detach(), right=True) - 1, 0, len(axis) - 2))
        t = (x - grid[idx]) / (grid[idx + 1] - grid[idx])
        weights_per_axis.append((idx, 1 - t, t))
    if not weights_per_axis:
        return values.reshape(())
    if len(weights_per_axis) == 1:
        idx, w0, w1 = weights_per_axis[0]
        return w0 * values[idx] + w1 * values[idx + 1]
    (i, a0, a1), (j, b0, b1) = weights_per_axis
    return (
        a0 * b0 * values[i, j]
        + a0 * b1 * values[i, j + 1]
        + a1 * b0 * values[i + 1, j]
        + a1 * b1 * values[i + 1, j + 1]
    )
