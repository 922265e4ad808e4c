"""What identifies a layer for latency purposes, and which channel counts a table measures for it.

Two layers with the same signature (op, kernel, stride, padding, dilation, input spatial size, grouping,
tokens) cost the same at the same channel counts, so a table measures each signature once. Batch size,
dtype, device, runtime and threads belong to the whole table (its environment), not to a signature.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from netdiet.graph.records import LayerShape


@dataclass(frozen=True)
class LayerSignature:
    op: str  # "conv", "dwconv" (depthwise: one channel axis), "convT" or "linear"
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    in_spatial: tuple[int, ...] = ()
    groups: int = 1  # grouped (not depthwise) convs: channel counts are multiples of it
    tokens: int = 1

    @property
    def one_axis(self) -> bool:
        """Depthwise conv: input channels = output channels = groups, a single count."""
        return self.op == "dwconv"

    def key(self) -> str:
        if self.op == "linear":
            return f"linear t{self.tokens}"

        def fmt(values: tuple[int, ...]) -> str:
            return "x".join(str(v) for v in values)

        parts = [self.op, f"k{fmt(self.kernel)}", f"s{fmt(self.stride)}", f"p{fmt(self.padding)}"]
        if any(d != 1 for d in self.dilation):
            parts.append(f"d{fmt(self.dilation)}")
        parts.append(f"in{fmt(self.in_spatial)}")
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerSignature:
        fields: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name in data:
                value = data[name]
                fields[name] = tuple(int(v) for v in value) if isinstance(value, list) else value
        return cls(**fields)

    def positions(self) -> tuple[int, int]:
        """Spatial positions (or tokens) per example at the input and at the output of the layer."""
        if self.op == "linear":
            return self.tokens, self.tokens
        pos_in, pos_out = 1, 1
        for size, k, s, p, d in zip(self.in_spatial, self.kernel, self.stride, self.padding, self.dilation):
            pos_in *= size
            if self.op == "convT":
                pos_out *= (size - 1) * s - 2 * p + d * (k - 1) + 1
            else:
                pos_out *= max(1, (size + 2 * p - d * (k - 1) - 1) // s + 1)
        return pos_in, pos_out

    def macs(self, batch: int, c_in: int, c_out: int) -> float:
        """Multiply-adds at these channel counts (used by the synthetic backend and for sanity checks)."""
        if self.op == "linear":
            return float(batch * self.tokens * c_in * c_out)
        out_spatial = 1
        for size, k, s, p, d in zip(self.in_spatial, self.kernel, self.stride, self.padding, self.dilation):
            if self.op == "convT":
                out_spatial *= size  # cost is counted over input positions for transposed convs
            else:
                out_spatial *= max(1, (size + 2 * p - d * (k - 1) - 1) // s + 1)
        kernel = 1
        for k in self.kernel:
            kernel *= k
        if self.op == "dwconv":
            return float(batch * out_spatial * kernel * c_in)
        return float(batch * out_spatial * kernel * c_in * c_out / self.groups)


def signature_of(shape: LayerShape) -> LayerSignature:
    if shape.op == "linear":
        return LayerSignature("linear", tokens=shape.tokens)
    op = "convT" if shape.transposed else ("dwconv" if shape.depthwise else "conv")
    return LayerSignature(
        op,
        kernel=shape.kernel,
        stride=shape.stride,
        padding=shape.padding,
        dilation=shape.dilation,
        in_spatial=shape.in_spatial,
        groups=1 if shape.depthwise else shape.groups,
    )


def axis_points(dense: int, free: bool, multiple: int = 1, intervals: int = 8, align: int = 8) -> list[int]:
    """Channel counts to measure on one axis: about `intervals` steps of a multiple of `align`, plus both
    ends.

    A frozen axis (model input, excluded module) is measured at its dense size only. `multiple` (the
    group count of a grouped conv) rounds every point up to a multiple of it.
    """
    if not free:
        return [dense]
    align = max(1, align)
    if dense <= align:
        points = set(range(1, dense + 1)) if dense <= 8 else {1, dense}
    else:
        step = align * max(1, round(dense / align / intervals))
        points = {1, dense, *range(step, dense, step)}
    if multiple > 1:
        points = {min(dense, -(-p // multiple) * multiple) for p in points}
    return sorted(points)


def unaligned_points(points: list[int], free: bool, multiple: int) -> list[int]:
    """One below every multiple of `multiple` in `points` (a frozen axis stays as it is)."""
    if not free or multiple <= 1:
        return list(points)
    return sorted({p - 1 if p % multiple == 0 and p > 1 else p for p in points})


def merge_points(*lists: Iterable[int]) -> list[int]:
    return sorted({int(p) for values in lists for p in values})
