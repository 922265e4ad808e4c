"""The latency table: per-signature measurements on one device, runtime, thread count, batch and dtype,
in fp32 and, where profiled, int8 (the precision axis: `TableEntry.int8`).

Stored as JSON (never a pickle) and written atomically after every measured signature, so a killed
profile keeps what it finished and `netdiet profile` resumes from it. A table is only valid in the
environment it was measured in: `check_env` refuses a table from another device, runtime version,
thread count, batch or dtype unless the caller forces it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiet.atomic import atomic_write_json
from netdiet.cost.latency.signature import LayerSignature
from netdiet.errors import LatencyTableError

FORMAT = "netdiet-latency-table"
VERSION = 1
ENV_KEYS = ("backend", "device", "runtime", "threads", "batch", "dtype")


@dataclass
class Grid:
    """Median milliseconds on a grid of channel counts.

    Two-axis grids hold `ms[i][j]` at (in_points[i], out_points[j]); depthwise ones hold `ms[i]` at
    in_points[i] (input = output channels) and no out_points.
    """

    in_points: list[int]
    out_points: list[int] | None
    ms: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return {"in_points": self.in_points, "out_points": self.out_points, "ms": self.ms}

    @classmethod
    def from_dict(cls, where: str, data: Any) -> Grid:
        if not isinstance(data, dict):
            raise LatencyTableError(f"{where}: expected an object, got {type(data).__name__}")
        try:
            in_points = [int(p) for p in data["in_points"]]
            out_raw = data.get("out_points")
            out_points = None if out_raw is None else [int(p) for p in out_raw]
            ms = data["ms"]
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencyTableError(f"{where}: missing or malformed field ({exc})") from None
        _check_grid(where, in_points, out_points, ms)
        return cls(in_points, out_points, ms)


@dataclass
class Int8Timings:
    """The same layer run by the runtime's int8 kernels (the table's precision axis).

    `grid` is measured at the fp32 grid's points, `unaligned` one channel below them (int8 kernels have
    their own block sizes), `multiple` is the int8 probe's result and `kernels` the ops the runtime ran
    (e.g. QLinearConv), read back from its optimised graph: an int8 table entry says what it timed.
    """

    grid: Grid
    unaligned: Grid | None = None
    multiple: int = 1
    kernels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.grid.to_dict(),
            "unaligned": self.unaligned.to_dict() if self.unaligned is not None else None,
            "multiple": self.multiple,
            "kernels": self.kernels,
        }

    @classmethod
    def from_dict(cls, where: str, data: Any) -> Int8Timings:
        grid = Grid.from_dict(where, data)
        raw = data.get("unaligned")
        unaligned = Grid.from_dict(f"{where} (unaligned)", raw) if raw is not None else None
        try:
            multiple = int(data.get("multiple", 1))
            kernels = [str(k) for k in data.get("kernels") or []]
        except (TypeError, ValueError) as exc:
            raise LatencyTableError(f"{where}: malformed multiple or kernels ({exc})") from None
        return cls(grid, unaligned, multiple, kernels)


@dataclass
class TableEntry:
    """One signature's measurements.

    `multiple` is the channel multiple the probe measured to pay on this backend (1: none does); read-off
    rounds to it. `grid` is measured at multiples of `align` (max(8, multiple)) and `unaligned` at one
    channel below each of them, because runtimes such as ONNX Runtime switch to a slower kernel off their
    block size and an interpolant between multiples would not see it. `probe` keeps the probe timings.
    """

    signature: LayerSignature
    grid: Grid
    multiple: int = 1
    unaligned: Grid | None = None
    probe: dict[str, Any] = field(default_factory=dict)
    align: int = 8
    int8: Int8Timings | None = None

    @property
    def in_points(self) -> list[int]:
        return self.grid.in_points

    @property
    def out_points(self) -> list[int] | None:
        return self.grid.out_points

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature.to_dict(),
            **self.grid.to_dict(),
            "multiple": self.multiple,
            "unaligned": self.unaligned.to_dict() if self.unaligned is not None else None,
            "align": self.align,
            "probe": self.probe,
            "int8": self.int8.to_dict() if self.int8 is not None else None,
        }

    @classmethod
    def from_dict(cls, key: str, data: Any) -> TableEntry:
        where = f"layer '{key}'"
        if not isinstance(data, dict):
            raise LatencyTableError(f"{where}: expected an object, got {type(data).__name__}")
        try:
            sig = LayerSignature.from_dict(data["signature"])
            multiple = int(data.get("multiple", 1))
            align = int(data.get("align", max(8, multiple)))
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencyTableError(f"{where}: missing or malformed field ({exc})") from None
        grid = Grid.from_dict(where, data)
        raw = data.get("unaligned")
        unaligned = Grid.from_dict(f"{where} (unaligned)", raw) if raw is not None else None
        probe = data.get("probe") or {}
        raw_int8 = data.get("int8")
        int8 = Int8Timings.from_dict(f"{where} (int8)", raw_int8) if raw_int8 is not None else None
        return cls(
            sig, grid, multiple, unaligned, dict(probe) if isinstance(probe, dict) else {}, align, int8
        )


def _check_grid(where: str, in_points: list[int], out_points: list[int] | None, ms: Any) -> None:
    for name, pts in (("in_points", in_points), ("out_points", out_points)):
        if pts is not None and (not pts or any(b <= a for a, b in zip(pts, pts[1:])) or pts[0] < 1):
            raise LatencyTableError(f"{where}: {name} must be increasing positive counts, got {pts}")
    rows = ms if isinstance(ms, list) else None
    if rows is None or len(rows) != len(in_points):
        raise LatencyTableError(f"{where}: ms must have one entry per in_point ({len(in_points)})")
    values = []
    for row in rows:
        if out_points is None:
            values.append(row)
        else:
            if not isinstance(row, list) or len(row) != len(out_points):
                raise LatencyTableError(f"{where}: every ms row must have {len(out_points)} values")
            values.extend(row)
    for v in values:
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise LatencyTableError(f"{where}: latencies must be positive finite numbers, got {v!r}")


@dataclass
class LatencyTable:
    env: dict[str, Any]
    protocol: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, TableEntry] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    netdiet_version: str = ""

    @property
    def batch(self) -> int:
        return int(self.env["batch"])

    @property
    def backend(self) -> str:
        return str(self.env["backend"])

    @property
    def precisions(self) -> tuple[str, ...]:
        """fp32 always; int8 when every entry has int8 timings."""
        has_int8 = bool(self.entries) and all(e.int8 is not None for e in self.entries.values())
        return ("fp32", "int8") if has_int8 else ("fp32",)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "netdiet": self.netdiet_version,
            "env": self.env,
            "protocol": self.protocol,
            "layers": {k: e.to_dict() for k, e in sorted(self.entries.items())},
            "calibration": self.calibration,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency table") -> LatencyTable:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LatencyTableError(
                f'{source} is not a netdiet latency table (no "format": "{FORMAT}"); '
                "make one with `netdiet profile MODEL --out TABLE.json`"
            )
        if data.get("version") != VERSION:
            raise LatencyTableError(
                f"{source} has table version {data.get('version')!r}; this netdiet reads version {VERSION}. "
                "Re-run `netdiet profile`."
            )
        env = data.get("env")
        if not isinstance(env, dict) or any(k not in env for k in ENV_KEYS):
            raise LatencyTableError(f"{source}: env must record {', '.join(ENV_KEYS)}")
        layers = data.get("layers")
        if not isinstance(layers, dict):
            raise LatencyTableError(f"{source}: 'layers' must be an object of measured signatures")
        entries = {k: TableEntry.from_dict(k, v) for k, v in layers.items()}
        calibration = data.get("calibration") or {}
        if not isinstance(calibration, dict):
            raise LatencyTableError(f"{source}: 'calibration' must be an object")
        return cls(env, dict(data.get("protocol") or {}), entries, calibration, str(data.get("netdiet", "")))

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LatencyTableError(
                f"latency table {path} does not exist; make it with `netdiet profile MODEL --out {path}`"
            ) from None
        except OSError as exc:
            raise LatencyTableError(f"cannot read latency table {path}: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise LatencyTableError(
                f"latency table {path} is not valid JSON ({exc}); it may be truncated. "
                "Delete it and re-run `netdiet profile`."
            ) from None
        return cls.from_dict(data, source=f"latency table {path}")

    def mismatches(self, env: dict[str, Any]) -> list[str]:
        """Which environment fields differ, as 'field: table X, here Y'."""
        out = []
        for key in ENV_KEYS:
            if self.env.get(key) != env.get(key):
                out.append(f"{key}: table {self.env.get(key)!r}, here {env.get(key)!r}")
        return out

    def check_env(self, env: dict[str, Any], *, force: bool = False) -> None:
        """Refuse a table measured elsewhere: its timings say nothing about this device or runtime."""
        diff = self.mismatches(env)
        if diff and not force:
            raise LatencyTableError(
                "the latency table was measured in another environment ("
                + "; ".join(diff)
                + "). Re-run `netdiet profile` here, or force it (force=True, --force-table) if you know "
                "the timings transfer."
            )
