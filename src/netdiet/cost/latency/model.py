"""The latency model of one model on one table: predicted ms of any keep-setting, exact or relaxed.

    predicted = scale * sum over conv/linear layers of T_layer(kept in, kept out)
                + unaligned_ms * (layers whose counts are off their grid's multiple)
                + activation_ms * (millions of elements entering and leaving those layers) + overhead

T_layer is the layer's table entry, interpolated; `scale`, `unaligned_ms` and `overhead` are the per-model
terms fitted against end-to-end measurements (`netdiet.report.calibrate_latency`): the overhead covers
what the tables do not time (adds, pooling, the runtime's per-call cost, minus the per-call cost each
isolated layer timing includes), the scale the difference between a layer alone and inside a graph, and
`unaligned_ms` the layout conversions a runtime inserts around a layer that leaves its blocked format, and
`activation_ms` the memory-bound work the tables do not time that grows with the activations (residual
adds, pooling, copies). Before calibration they are 1, 0, 0 and 0.

Counts may be ints (scipy interpolation) or tensors (torch interpolation, differentiable), so the same
object is the exact cost and the l1/l2 surrogate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from netdiet.cost.latency.interp import interpolate, interpolate_torch
from netdiet.cost.latency.signature import LayerSignature, axis_points, signature_of
from netdiet.cost.latency.table import Grid, LatencyTable, TableEntry
from netdiet.errors import LatencyTableError
from netdiet.graph.layout import Layout
from netdiet.graph.records import LayerShape
from netdiet.space import Space


@dataclass
class LayerNeed:
    """One conv/linear call of the model and what its table entry must cover."""

    shape: LayerShape
    signature: LayerSignature
    free_in: bool
    free_out: bool

    @property
    def key(self) -> str:
        return self.signature.key()

    def points(self, align: int = 8) -> tuple[list[int], list[int] | None]:
        multiple = self.signature.groups if self.signature.groups > 1 else 1
        ins = axis_points(self.shape.in_channels, self.free_in, multiple, align=align)
        if self.signature.one_axis:
            return ins, None
        return ins, axis_points(self.shape.out_channels, self.free_out, multiple, align=align)


def _touches(space: Space, layout: Layout, atoms: set[int]) -> bool:
    return any(a.id in atoms for a in space.analysis.table.leaves(layout))


def layer_needs(space: Space) -> list[LayerNeed]:
    atoms = {g.atom for g in space.groups}
    out = []
    for shape in space.analysis.layer_shapes:
        sig = signature_of(shape)
        out.append(
            LayerNeed(
                shape, sig, _touches(space, shape.in_layout, atoms), _touches(space, shape.out_layout, atoms)
            )
        )
    return out


def model_fingerprint(space: Space) -> str:
    """Identifies the model's layer structure (which calibration belongs to it)."""
    items = [
        (n.shape.layer, n.key, n.shape.in_channels, n.shape.out_channels, n.free_in, n.free_out)
        for n in layer_needs(space)
    ]
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()[:16]


def covers(entry: TableEntry, need: LayerNeed) -> bool:
    """The entry's grid reaches the layer's dense channel counts (its points were chosen for them)."""
    if max(entry.in_points) < need.shape.in_channels:
        return False
    if need.signature.one_axis:
        return True
    return entry.out_points is not None and max(entry.out_points) >= need.shape.out_channels


class LatencyModel:
    """Predicted latency (ms) of keep-settings of `space`, from `table`."""

    def __init__(self, space: Space, table: LatencyTable) -> None:
        self.space = space
        self.table = table
        self.needs = layer_needs(space)
        missing = sorted({n.key for n in self.needs if n.key not in table.entries})
        if missing:
            raise LatencyTableError(
                f"the latency table has no measurements for {len(missing)} layer shape(s) of this model "
                f"(e.g. {missing[0]!r}); run `netdiet profile` for this model with the table as --out to add them"
            )
        for need in self.needs:
            if not covers(table.entries[need.key], need):
                raise LatencyTableError(
                    f"the latency table covers {need.key!r} only up to "
                    f"{max(table.entries[need.key].in_points)} channels, fewer than layer {need.shape.layer} "
                    "has; re-run `netdiet profile` for this model with the table as --out"
                )
        self.fingerprint = model_fingerprint(space)
        cal = table.calibration.get(self.fingerprint, {})
        self.scale = float(cal.get("scale", 1.0))
        self.overhead_ms = float(cal.get("overhead_ms", 0.0))
        self.unaligned_ms = float(cal.get("unaligned_ms", 0.0))
        self.activation_ms = float(cal.get("activation_ms", 0.0))
        self.calibrated = bool(cal)

    @property
    def batch(self) -> int:
        return self.table.batch

    def layer_ms(self, counts: Mapping[int, Any]) -> list[Any]:
        """Per-layer table latency at kept counts per atom (`Space.counts`)."""
        out: list[Any] = []
        for need in self.needs:
            c_in = self.space.dim_size(need.shape.in_layout, counts)
            c_out = self.space.dim_size(need.shape.out_layout, counts)
            entry = self.table.entries[need.key]
            grid = self._grid(entry, need, c_in, c_out)
            if isinstance(c_in, torch.Tensor) or isinstance(c_out, torch.Tensor):
                out.append(interpolate_torch(grid, c_in, c_out))
            else:
                out.append(interpolate(grid, float(c_in), float(c_out)))
        return out

    @staticmethod
    def _grid(entry: TableEntry, need: LayerNeed, c_in: Any, c_out: Any) -> Grid:
        """The unaligned grid for whole counts off the grid's multiple (`align`); the aligned one otherwise
        (relaxed counts price the aligned grid: read-off rounds to the multiple)."""
        if entry.unaligned is None:
            return entry.grid
        free = [c_in] if need.free_in else []
        if need.free_out and not need.signature.one_axis:
            free.append(c_out)
        for c in free:
            value = float(c.detach()) if isinstance(c, torch.Tensor) else float(c)
            if abs(value - round(value)) < 1e-6 and round(value) % entry.align != 0:
                return entry.unaligned
        return entry.grid

    def tabled_ms(self, counts: Mapping[int, Any]) -> Any:
        """Sum of the table latencies, before the fitted scale and overhead."""
        total: Any = 0.0
        for value in self.layer_ms(counts):
            total = total + value
        return total

    def unaligned_layers(self, counts: Mapping[int, Any]) -> int:
        """Layers whose whole counts are off the multiple their table measured to pay."""
        n = 0
        for need in self.needs:
            entry = self.table.entries[need.key]
            c_in = self.space.dim_size(need.shape.in_layout, counts)
            c_out = self.space.dim_size(need.shape.out_layout, counts)
            n += int(self._grid(entry, need, c_in, c_out) is not entry.grid)
        return n

    def activation_melems(self, counts: Mapping[int, Any]) -> Any:
        """Millions of activation elements entering and leaving the conv/linear layers, per batch."""
        total: Any = 0.0
        for need in self.needs:
            c_in = self.space.dim_size(need.shape.in_layout, counts)
            c_out = self.space.dim_size(need.shape.out_layout, counts)
            pos_in, pos_out = need.signature.positions()
            total = total + (c_in * pos_in + c_out * pos_out) * (self.batch / 1e6)
        return total

    def predict(self, counts: Mapping[int, Any]) -> Any:
        value: Any = self.scale * self.tabled_ms(counts) + self.overhead_ms
        if self.unaligned_ms:
            value = value + self.unaligned_ms * self.unaligned_layers(counts)
        if self.activation_ms:
            value = value + self.activation_ms * self.activation_melems(counts)
        return value

    def predict_keep(self, keep: Mapping[str, Any] | None = None) -> float:
        return float(self.predict(self.space.counts(keep)))

    def group_multiples(self) -> dict[str, int]:
        """Per group, the channel multiple measured to pay on every layer shape it feeds (1: none).

        A multiple m is used for a group when some layer it enters or leaves measured m as paying, the
        group's size is a multiple of m and larger than m (so the group can still shrink).
        """
        out: dict[str, int] = {}
        for group in self.space.groups:
            best = 1
            for need in self.needs:
                entry = self.table.entries[need.key]
                touched = _touches(self.space, need.shape.in_layout, {group.atom}) or _touches(
                    self.space, need.shape.out_layout, {group.atom}
                )
                m = entry.multiple
                if touched and m > best and group.size % m == 0 and group.size > m:
                    best = m
            if best > 1:
                out[group.name] = best
        return out
