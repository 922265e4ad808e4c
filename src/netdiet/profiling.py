"""Getting a latency table that is ready to price a model: load or measure it, check it, calibrate it.

Beside the pipeline (like `compress`): it drives the cost stage's profiler and the report stage's
end-to-end calibration, for `netdiet profile`, `netdiet.compress` and `netdiet compress`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from netdiet.cost.latency import LatencyModel, LatencyTable, TimingProtocol, make_backend, profile_space
from netdiet.cost.latency.backends import default_backend_name
from netdiet.errors import ConfigError, LatencyTableError
from netdiet.report.latency_fit import calibrate_latency
from netdiet.space import Space


def check_table_here(table: LatencyTable, *, force: bool = False) -> None:
    """Refuse a table measured on another device/runtime/threads/batch/dtype than this machine's."""
    if force:
        return
    try:
        backend = make_backend(
            table.backend, threads=int(table.env["threads"]), dtype=str(table.env["dtype"])
        )
    except ConfigError as exc:
        raise LatencyTableError(
            f"the latency table was measured with backend '{table.backend}', which cannot run here ({exc}); "
            "force it (force=True, --force-table) to price with it anyway"
        ) from None
    table.check_env(backend.env(table.batch))


def prepare_latency_table(
    space: Space,
    table: LatencyTable | str | Path | None = None,
    *,
    backend: str | None = None,
    batch: int | None = None,
    threads: int | None = None,
    force: bool = False,
    calibrate: int = 10,
    save_to: str | Path | None = None,
    protocol: TimingProtocol | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    precisions: tuple[str, ...] = ("fp32",),
) -> LatencyTable:
    """A table covering every layer shape of `space`, checked for this machine and calibrated for it.

    `table` may be a LatencyTable, a path (measured if missing, completed if it lacks some layer shapes,
    resumed if a profile was killed) or None (measured now with `backend`, default onnxruntime where
    installed, at `batch`, default 1). The result is written to `save_to`, else back to `table`'s path.
    An existing table measured with another backend, batch or thread count than the ones asked for is
    refused unless `force` (then its own settings are used). `precisions=("fp32", "int8")` adds the
    int8 axis: every layer shape also timed with the runtime's int8 kernels, calibrated end to end on
    int8 exports.
    """
    path = Path(save_to) if save_to is not None else (Path(table) if isinstance(table, (str, Path)) else None)
    start: LatencyTable | None = table if isinstance(table, LatencyTable) else None
    if start is None and isinstance(table, (str, Path)) and Path(table).exists():
        start = LatencyTable.load(table)
    if start is not None:
        check_table_here(start, force=force)
        asked = {"backend": backend, "batch": batch, "threads": threads}
        have = {"backend": start.backend, "batch": start.batch, "threads": int(start.env["threads"])}
        differ = [
            f"{k}: table {have[k]!r}, asked {v!r}" for k, v in asked.items() if v is not None and v != have[k]
        ]
        if differ and not force:
            raise LatencyTableError(
                "the latency table was measured with other settings than asked for ("
                + "; ".join(differ)
                + "): give another table path, drop the setting, or force it"
            )
        backend, batch, threads = start.backend, start.batch, int(start.env["threads"])
    layer_backend = make_backend(backend or default_backend_name(), threads=threads or 1, protocol=protocol)
    # a given table was checked above (or forced on purpose); one found at `save_to` is checked here
    result = profile_space(
        space,
        layer_backend,
        batch or 1,
        path=path,
        table=start,
        force=force or start is not None,
        progress=progress,
        precisions=precisions,
    )
    if path is not None:
        result.save(path)
    for precision in precisions:
        if calibrate > 0 and not LatencyModel(space, result).is_calibrated(precision):
            calibrate_latency(space, result, n_fit=calibrate, path=path, progress=log, precision=precision)
    return result
