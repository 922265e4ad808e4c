"""Measure the latency table of a model: every layer shape it contains, on a grid of channel counts.

The table is saved after every finished layer shape, so a killed profile keeps them and the next run
with the same `path` resumes (entries that already cover the needed grid are not measured again).
Each shape also gets a multiple probe: is the layer at a multiple m of channels no slower than with m/2
fewer channels? If so (ONNX Runtime's blocked NCHWc kernels on x86, for example) channel counts are
rounded to m at read-off; if not, they are not. Measured per backend and shape, never assumed.
With the int8 precision asked for, every shape is timed again with the runtime's int8 kernels on the same
grid (its own probe too), and the kernels the runtime ran are recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from netdiet.cost.latency.backends import LayerBackend
from netdiet.cost.latency.model import LayerNeed, covers, layer_needs
from netdiet.cost.latency.signature import LayerSignature, merge_points, unaligned_points
from netdiet.cost.latency.table import Grid, Int8Timings, LatencyTable, TableEntry
from netdiet.errors import ConfigError
from netdiet.space import Space

PROBE_MULTIPLES = (16, 8)
PROBE_TOLERANCE = 0.03


def _version() -> str:
    from netdiet import __version__

    return __version__


def _merge(needs: list[LayerNeed]) -> dict[str, list[LayerNeed]]:
    """The layers of each signature; the one with the most channels is measured for all of them."""
    out: dict[str, list[LayerNeed]] = {}
    for need in needs:
        out.setdefault(need.key, []).append(need)
    for group in out.values():
        group.sort(key=lambda n: (n.shape.in_channels, n.shape.out_channels), reverse=True)
    return out


def _points(needs: list[LayerNeed], align: int) -> tuple[list[int], list[int] | None]:
    ins: list[int] = []
    outs: list[int] | None = [] if not needs[0].signature.one_axis else None
    for need in needs:
        a, b = need.points(align)
        ins = merge_points(ins, a)
        if outs is not None and b is not None:
            outs = merge_points(outs, b)
    return ins, outs


def _timer(backend: LayerBackend, precision: str) -> Callable[[LayerSignature, int, int, int], float]:
    if precision == "fp32":
        return backend.time_layer
    return lambda sig, batch, c_in, c_out: backend.time_layer(sig, batch, c_in, c_out, precision=precision)


def measure_grid(
    backend: LayerBackend,
    sig: LayerSignature,
    batch: int,
    ins: list[int],
    outs: list[int] | None,
    precision: str = "fp32",
) -> Grid:
    time = _timer(backend, precision)
    ms: list[Any] = []
    for c_in in ins:
        if outs is None:
            ms.append(time(sig, batch, c_in, c_in))
        else:
            ms.append([time(sig, batch, c_in, c_out) for c_out in outs])
    return Grid(ins, outs, ms)


def probe_multiple(
    backend: LayerBackend, need: LayerNeed, batch: int, precision: str = "fp32"
) -> tuple[int, dict[str, Any]]:
    """The largest m in PROBE_MULTIPLES that pays, measured at a mid-size count c (a multiple of m).

    m pays when (a) c channels are no slower than c - 1 (runtimes with blocked kernels fall back to a
    slower one off the block, so rounding up costs nothing), and, for any m but the smallest candidate,
    (b) c is no slower than c - m/2: otherwise the half-step multiple is a cheaper choice the restriction
    to m would take away. Tolerance PROBE_TOLERANCE. 1 when none pays.
    """
    sig = need.signature
    shape = need.shape
    record: dict[str, Any] = {}
    smallest = min(PROBE_MULTIPLES)
    for m in PROBE_MULTIPLES:
        axes = []
        if need.free_in and shape.in_channels >= 2 * m:
            axes.append("in")
        if not sig.one_axis and need.free_out and shape.out_channels >= 2 * m:
            axes.append("out")
        if not axes or sig.groups > 1:
            continue

        def at(delta: int, m: int = m, axes: list[str] = axes) -> tuple[int, int]:
            c_in = m * max(1, shape.in_channels // 2 // m) if "in" in axes else shape.in_channels
            c_out = m * max(1, shape.out_channels // 2 // m) if "out" in axes else shape.out_channels
            c_in = c_in - delta if "in" in axes else c_in
            c_out = c_out - delta if "out" in axes else c_out
            return (c_in, c_in) if sig.one_axis else (c_in, c_out)

        counts = {"multiple": at(0), "one_below": at(1)}
        if m != smallest:
            counts["half_step_below"] = at(m // 2)
        time = _timer(backend, precision)
        ms = {k: time(sig, batch, *c) for k, c in counts.items()}
        pays = ms["multiple"] <= (1 + PROBE_TOLERANCE) * ms["one_below"] and (
            "half_step_below" not in ms or ms["multiple"] <= (1 + PROBE_TOLERANCE) * ms["half_step_below"]
        )
        record[str(m)] = {"counts": counts, "ms": ms, "pays": pays}
        if pays:
            return m, record
    return 1, record


def profile_space(
    space: Space,
    backend: LayerBackend,
    batch: int,
    *,
    path: str | Path | None = None,
    table: LatencyTable | None = None,
    resume: bool = True,
    force: bool = False,
    probe: bool = True,
    progress: bool = True,
    on_entry: Callable[[str, TableEntry], None] | None = None,
    precisions: tuple[str, ...] = ("fp32",),
) -> LatencyTable:
    """Measure (or complete) the latency table of `space`'s layer shapes at `batch` on `backend`.

    With `path` and `resume`, an existing table there is reused if it was measured in this environment
    (a table from elsewhere is refused unless `force`) and written back after every layer shape. A
    `table` given directly is completed instead (same check). `precisions` adds the int8 axis
    ("fp32", "int8"): every entry also timed with the runtime's int8 kernels, on the same grid.
    """
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    unknown = [p for p in precisions if p not in ("fp32", "int8")]
    if unknown or "fp32" not in precisions:
        raise ConfigError(f"precisions must include 'fp32' and may add 'int8', got {precisions}")
    if "int8" in precisions:
        backend.check_precision("int8")
    env = backend.env(batch)
    if table is None and path is not None and resume and Path(path).exists():
        table = LatencyTable.load(path)
    if table is not None:
        table.check_env(env, force=force)
    if table is None:
        table = LatencyTable(env=env, protocol=backend.protocol.to_dict(), netdiet_version=_version())
    grouped = _merge(layer_needs(space))
    todo = {
        k: needs
        for k, needs in grouped.items()
        if k not in table.entries or not all(covers(table.entries[k], n) for n in needs)
    }
    bar = _bar(len(todo), progress, f"profile {backend.name} b{batch}")
    try:
        for key, needs in todo.items():
            widest = needs[0]
            multiple, record = probe_multiple(backend, widest, batch) if probe else (1, {})
            ins, outs = _points(needs, align=max(8, multiple))
            grid = measure_grid(backend, widest.signature, batch, ins, outs)
            # measured for every shape, not only where rounding pays: a runtime may still pick a slower
            # kernel off the grid's multiples, and an interpolant between multiples would not see it
            align = max(8, multiple)
            free_in = any(n.free_in for n in needs)
            free_out = any(n.free_out for n in needs)
            u_in = unaligned_points(ins, free_in, align)
            u_out = None if outs is None else unaligned_points(outs, free_out, align)
            unaligned = None
            if u_in != ins or (outs is not None and u_out != outs):
                unaligned = measure_grid(backend, widest.signature, batch, u_in, u_out)
            entry = TableEntry(widest.signature, grid, multiple, unaligned, record, align)
            table.entries[key] = entry
            _finished(table, key, path, on_entry, bar)
    finally:
        bar.close()
    if "int8" in precisions:
        _profile_int8(table, grouped, backend, batch, path, probe, progress, on_entry)
    return table


def _profile_int8(
    table: LatencyTable,
    grouped: dict[str, list[LayerNeed]],
    backend: LayerBackend,
    batch: int,
    path: str | Path | None,
    probe: bool,
    progress: bool,
    on_entry: Callable[[str, TableEntry], None] | None,
) -> None:
    """Time every entry that lacks them with the int8 kernels, at the fp32 grid's points (and one channel
    below them), with its own multiple probe; record the kernels the runtime ran."""
    todo = [k for k in grouped if table.entries[k].int8 is None]
    bar = _bar(len(todo), progress, f"profile {backend.name} int8 b{batch}")
    try:
        for key in todo:
            entry, widest = table.entries[key], grouped[key][0]
            sig = entry.signature
            multiple, record = probe_multiple(backend, widest, batch, "int8") if probe else (1, {})
            grid = measure_grid(backend, sig, batch, entry.grid.in_points, entry.grid.out_points, "int8")
            unaligned = None
            if entry.unaligned is not None:
                u = entry.unaligned
                unaligned = measure_grid(backend, sig, batch, u.in_points, u.out_points, "int8")
            c_in = entry.grid.in_points[-1]
            c_out = c_in if entry.grid.out_points is None else entry.grid.out_points[-1]
            kernels = backend.layer_kernels(sig, batch, c_in, c_out, "int8")
            entry.int8 = Int8Timings(grid, unaligned, multiple, kernels)
            entry.probe["int8"] = record
            _finished(table, key, path, on_entry, bar)
    finally:
        bar.close()


def _finished(
    table: LatencyTable,
    key: str,
    path: str | Path | None,
    on_entry: Callable[[str, TableEntry], None] | None,
    bar: Any,
) -> None:
    """One signature measured: written to disk at once (a killed profile keeps it), reported, counted."""
    if path is not None:
        table.save(path)
    if on_entry is not None:
        on_entry(key, table.entries[key])
    bar.update(1)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled or total == 0:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="layer shape", leave=False)
