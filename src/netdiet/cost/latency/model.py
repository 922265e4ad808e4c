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

The precision axis: `bits` maps a layer to its effective bit width (the larger of its weight and input
bits). A layer at <= 8 bits runs the runtime's int8 kernel and is priced from its entry's int8 timings
(`TableEntry.int8`, measured); above 8 bits from the fp32 ones (CPU runtimes have no faster kernel for
16 bits, and below 8 bits their kernels are still int8). Relaxed bits (tensors) blend the two with
share(b) = clamp((16 - b) / 8, 0, 1), so a bit width learned between 8 and 16 has a latency gradient.
The fitted terms are per precision (`calibration[fingerprint]` for fp32, `[fingerprint + "@int8"]` for
an all-int8 model) and blended by the model's mean int8 share.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from netdiet.cost.blocks import block_factor
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


PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class FittedTerms:
    """The per-model terms of one precision (identity until `report.calibrate_latency` fits them)."""

    scale: float = 1.0
    overhead_ms: float = 0.0
    unaligned_ms: float = 0.0
    activation_ms: float = 0.0
    calibrated: bool = False


def _terms(cal: Mapping[str, Any]) -> FittedTerms:
    return FittedTerms(
        float(cal.get("scale", 1.0)),
        float(cal.get("overhead_ms", 0.0)),
        float(cal.get("unaligned_ms", 0.0)),
        float(cal.get("activation_ms", 0.0)),
        bool(cal),
    )


def int8_share(bits: Any) -> Any:
    """1 at <= 8 bits (int8 kernels), else 0 for whole bits; relaxed bits blend linearly from 1 at 8 to 0
    at 16 (a tensor stays differentiable)."""
    if isinstance(bits, torch.Tensor):
        return torch.clamp((16.0 - bits) / 8.0, 0.0, 1.0)
    b = float(bits)
    if b.is_integer():  # whole bits are exported: a layer runs int8 kernels or it does not
        return 1.0 if b <= 8 else 0.0
    return min(1.0, max(0.0, (16.0 - b) / 8.0))


def _num(value: Any) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _is_zero(value: Any) -> bool:
    return not isinstance(value, torch.Tensor) and float(value) == 0.0


def _is_one(value: Any) -> bool:
    return not isinstance(value, torch.Tensor) and float(value) == 1.0


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
        # a model with droppable blocks needs a fit that saw settings dropping them: one fitted on widths
        # alone (before depth variants were measured) is refitted
        has_blocks = bool(space.knobs_of("block"))
        self.terms = {}
        for p in PRECISIONS:
            cal = table.calibration.get(self.calibration_key(p), {})
            self.terms[p] = _terms(cal if not has_blocks or "depth_variants" in cal else {})
        fp32 = self.terms["fp32"]
        self.scale, self.overhead_ms = fp32.scale, fp32.overhead_ms
        self.unaligned_ms, self.activation_ms = fp32.unaligned_ms, fp32.activation_ms
        self.calibrated = fp32.calibrated

    def calibration_key(self, precision: str = "fp32") -> str:
        """Where `report.calibrate_latency` stores this model's fitted terms for `precision`."""
        return self.fingerprint if precision == "fp32" else f"{self.fingerprint}@{precision}"

    def is_calibrated(self, precision: str = "fp32") -> bool:
        return self.terms[precision].calibrated

    @property
    def has_int8(self) -> bool:
        return all(self.table.entries[n.key].int8 is not None for n in self.needs)

    def int8_shares(self, bits: Mapping[str, Any] | None) -> list[Any]:
        """Per layer, the share priced at int8 (0 or 1 for whole bits, blended for relaxed ones)."""
        shares: list[Any] = []
        for need in self.needs:
            b = None if bits is None else bits.get(need.shape.layer)
            share = 0.0 if b is None else int8_share(b)
            if not _is_zero(share) and self.table.entries[need.key].int8 is None:
                raise LatencyTableError(
                    f"layer {need.shape.layer} is priced at {_num(b):g} bits but the latency table has no "
                    f"int8 timings for {need.key!r}; profile with the int8 precision (`netdiet profile "
                    "--int8`, or precisions=('fp32', 'int8')) to price quantized layers"
                )
            shares.append(share)
        return shares

    @property
    def batch(self) -> int:
        return self.table.batch

    def layer_ms(self, counts: Mapping[int, Any], bits: Mapping[str, Any] | None = None) -> list[Any]:
        """Per-layer table latency at kept counts per atom (`Space.counts`) and bits per layer."""
        out: list[Any] = []
        for need, share in zip(self.needs, self.int8_shares(bits)):
            c_in = self.space.dim_size(need.shape.in_layout, counts)
            c_out = self.space.dim_size(need.shape.out_layout, counts)
            entry = self.table.entries[need.key]
            value: Any = 0.0
            for precision, weight in (("fp32", 1 - share), ("int8", share)):
                if _is_zero(weight):
                    continue
                grid = self._grid(entry, need, c_in, c_out, precision)
                if isinstance(c_in, torch.Tensor) or isinstance(c_out, torch.Tensor):
                    ms: Any = interpolate_torch(grid, c_in, c_out)
                else:
                    ms = interpolate(grid, float(c_in), float(c_out))
                value = value + (ms if _is_one(weight) else weight * ms)
            out.append(value)
        return out

    @staticmethod
    def _grid(entry: TableEntry, need: LayerNeed, c_in: Any, c_out: Any, precision: str = "fp32") -> Grid:
        """The unaligned grid for whole counts off the grid's multiple (`align`); the aligned one otherwise
        (relaxed counts price the aligned grid: read-off rounds to the multiple)."""
        aligned, unaligned = entry.grid, entry.unaligned
        if precision == "int8":
            assert entry.int8 is not None
            aligned, unaligned = entry.int8.grid, entry.int8.unaligned
        if unaligned is None:
            return aligned
        free = [c_in] if need.free_in else []
        if need.free_out and not need.signature.one_axis:
            free.append(c_out)
        for c in free:
            value = float(c.detach()) if isinstance(c, torch.Tensor) else float(c)
            if abs(value - round(value)) < 1e-6 and round(value) % entry.align != 0:
                return unaligned
        return aligned

    def tabled_ms(
        self,
        counts: Mapping[int, Any],
        bits: Mapping[str, Any] | None = None,
        blocks: Mapping[str, Any] | None = None,
    ) -> Any:
        """Sum of the table latencies (of the layers of kept blocks), before the fitted scale and overhead."""
        total: Any = 0.0
        for need, value in zip(self.needs, self.layer_ms(counts, bits)):
            total = total + (value * block_factor(need.shape.layer, blocks) if blocks else value)
        return total

    def unaligned_layers(
        self,
        counts: Mapping[int, Any],
        bits: Mapping[str, Any] | None = None,
        blocks: Mapping[str, Any] | None = None,
    ) -> Any:
        """Layers whose whole counts are off the multiple their table measured to pay (a layer inside a
        dropped block counts its block's value: none)."""
        n: Any = 0
        for need, share in zip(self.needs, self.int8_shares(bits)):
            entry = self.table.entries[need.key]
            c_in = self.space.dim_size(need.shape.in_layout, counts)
            c_out = self.space.dim_size(need.shape.out_layout, counts)
            precision = "int8" if _num(share) > 0.5 else "fp32"
            grid = self._grid(entry, need, c_in, c_out, precision)
            off = int(grid is not (entry.grid if precision == "fp32" else entry.int8.grid))  # type: ignore[union-attr]
            n = n + (off * block_factor(need.shape.layer, blocks) if blocks and off else off)
        return n

    def int8_fraction(self, bits: Mapping[str, Any] | None) -> Any:
        """Mean int8 share over the layers: how the per-precision fitted terms are blended."""
        shares = self.int8_shares(bits)
        total: Any = 0.0
        for share in shares:
            total = total + share
        return total / max(1, len(shares))

    def activation_melems(self, counts: Mapping[int, Any], blocks: Mapping[str, Any] | None = None) -> Any:
        """Millions of activation elements entering and leaving the conv/linear layers, per batch (those
        of a layer inside a dropped block are gone with it: scaled by its block's value)."""
        total: Any = 0.0
        for need in self.needs:
            c_in = self.space.dim_size(need.shape.in_layout, counts)
            c_out = self.space.dim_size(need.shape.out_layout, counts)
            pos_in, pos_out = need.signature.positions()
            term = (c_in * pos_in + c_out * pos_out) * (self.batch / 1e6)
            total = total + (term * block_factor(need.shape.layer, blocks) if blocks else term)
        return total

    def predict(
        self,
        counts: Mapping[int, Any],
        bits: Mapping[str, Any] | None = None,
        blocks: Mapping[str, Any] | None = None,
    ) -> Any:
        """Predicted ms at kept counts per atom and effective bits per layer (None: all fp32); `blocks`
        (module path -> 1 kept / 0 dropped / relaxed) scales every term of the layers inside each block."""
        w = self.int8_fraction(bits) if bits else 0.0
        fp32, int8 = self.terms["fp32"], self.terms["int8"]

        def blend(a: float, b: float) -> Any:
            return a if _is_zero(w) else (b if _is_one(w) else a + w * (b - a))

        tabled = self.tabled_ms(counts, bits, blocks)
        value: Any = blend(fp32.scale, int8.scale) * tabled
        value = value + blend(fp32.overhead_ms, int8.overhead_ms)
        unaligned_ms = blend(fp32.unaligned_ms, int8.unaligned_ms)
        if not _is_zero(unaligned_ms):
            value = value + unaligned_ms * self.unaligned_layers(counts, bits, blocks)
        activation_ms = blend(fp32.activation_ms, int8.activation_ms)
        if not _is_zero(activation_ms):
            # every term drops with its block's layers, as in the exported model; the terms are fitted on
            # variants that drop blocks too (report.calibrate_latency), since a fit on widths alone, with
            # its negative activation term, mispriced depth by 14% (benchmarks/latency/RESULTS-depth-cpu-quick.md)
            value = value + activation_ms * self.activation_melems(counts, blocks)
        return value

    def predict_keep(
        self, keep: Mapping[str, Any] | None = None, bits: Mapping[str, Any] | None = None
    ) -> float:
        return float(self.predict(self.space.counts(keep), bits))

    def uniform_bits(self, bits: int) -> dict[str, int]:
        """Every conv/linear layer at `bits` (what `compress(bits=8)` prices)."""
        return {need.shape.layer: bits for need in self.needs}

    def group_multiples(self, precision: str = "fp32") -> dict[str, int]:
        """Per group, the channel multiple measured to pay on every layer shape it feeds (1: none), in
        `precision` (int8: the int8 probe's multiples; fp32 where a shape has no int8 timings).

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
                m = entry.int8.multiple if precision == "int8" and entry.int8 is not None else entry.multiple
                if touched and m > best and group.size % m == 0 and group.size > m:
                    best = m
            if best > 1:
                out[group.name] = best
        return out
