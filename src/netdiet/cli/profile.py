"""`netdiet profile MODEL`: measure the latency table of a model on this machine, calibrate, validate.

    netdiet profile resnet20 --backend onnxruntime --batch 64 --out r20-ort-b64.json --validate 10
    netdiet profile resnet20 --batch 64 --int8 --out r20-ort-b64.json   # add the int8 precision axis

Measures every conv/linear layer shape of MODEL over a grid of channel counts (resumable: run the same
command again after a kill and finished shapes are kept), fits the per-model overhead on real pruned
variants, and with --validate N reports the prediction error on N held-out variants, stored in the table.
With --int8 every layer shape is also timed with ONNX Runtime's int8 kernels (QLinearConv, QGemm, ...),
calibrated on int8 exports and validated the same way, so a latency budget prices quantized layers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from netdiet import zoo
from netdiet.cost.latency import BACKENDS, LatencyModel, TimingProtocol
from netdiet.errors import NetdietError
from netdiet.profiling import prepare_latency_table
from netdiet.report.latency_fit import validate_latency
from netdiet.space import analyze


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a latency table for a model on this device and runtime",
        description=(
            "Measure per-layer latency of MODEL over a grid of channel counts on one backend, batch and "
            "thread count, fit the per-model overhead end to end, and optionally validate the predictions "
            "on held-out pruned variants. The table prices `--budget latency=...` in `netdiet compress`."
        ),
    )
    p.add_argument(
        "model",
        help=f"a zoo model ({', '.join(zoo.names())}), a `netdiet train` run directory, or 'module:factory' "
        "(then give --input-shape)",
    )
    p.add_argument(
        "--backend", choices=sorted(BACKENDS), default=None, help="default: onnxruntime if installed"
    )
    p.add_argument("--batch", type=int, default=1, help="batch size to time (default 1)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--input-shape", default=None, help="for module:factory models: input shape without batch")
    p.add_argument("--out", required=True, help="the table (JSON); an existing one is resumed/completed")
    p.add_argument(
        "--calibrate", type=int, default=10, help="pruned variants for the overhead fit (default 10)"
    )
    p.add_argument("--validate", type=int, default=0, help="held-out variants to check predictions on")
    p.add_argument("--repeats", type=int, default=25, help="timed repeats per measurement (median)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also time every layer with the runtime's int8 kernels (the precision axis; onnxruntime)",
    )
    p.add_argument("--force-table", action="store_true", help="use a table from another environment")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def _model(spec: str, input_shape: str | None) -> tuple[Any, tuple]:
    run_dir = Path(spec)
    if (run_dir / "model.json").is_file():
        from netdiet.train import load_model

        model, meta = load_model(run_dir)
        return model, tuple(t[:1] for t in zoo.example_inputs(meta["model"], **meta["model_config"]))
    from netdiet.cli.analyze import load_model as load_spec

    return load_spec(spec, 1, input_shape)


def run(args: argparse.Namespace) -> int:
    if args.batch < 1 or args.threads < 1:
        raise NetdietError("--batch and --threads must be >= 1")
    if args.calibrate < 0 or args.validate < 0:
        raise NetdietError("--calibrate and --validate must be >= 0")
    if args.validate and not args.calibrate:
        raise NetdietError("--validate checks a calibrated model: give --calibrate N > 0")
    out = Path(args.out)
    model, inputs = _model(args.model, args.input_shape)
    space = analyze(model, inputs)
    precisions = ("fp32", "int8") if args.int8 else ("fp32",)
    log = None if args.no_progress else (lambda msg: print(msg, flush=True))
    table = prepare_latency_table(
        space,
        out,
        backend=args.backend,
        batch=args.batch,
        threads=args.threads,
        force=args.force_table,
        calibrate=args.calibrate,
        protocol=TimingProtocol(repeats=args.repeats),
        progress=not args.no_progress,
        log=log,
        precisions=precisions,
    )
    latency = LatencyModel(space, table)
    summary: dict[str, Any] = {
        "table": str(out),
        "env": table.env,
        "layer_shapes": len(table.entries),
        "precisions": list(table.precisions),
        "multiples": {k: e.multiple for k, e in table.entries.items() if e.multiple > 1},
        "dense_predicted_ms": latency.predict_keep(None),
    }
    if "int8" in precisions:
        summary["int8_predicted_ms"] = latency.predict_keep(None, latency.uniform_bits(8))
        summary["int8_kernels"] = {k: e.int8.kernels for k, e in table.entries.items() if e.int8 is not None}
    for precision in precisions:
        key = latency.calibration_key(precision)
        suffix = "" if precision == "fp32" else f"_{precision}"
        if latency.is_calibrated(precision):
            cal = table.calibration[key]
            summary["calibration" + suffix] = {
                k: cal[k] for k in ("scale", "unaligned_ms", "overhead_ms", "dense_measured_ms")
            }
        if args.validate:
            result = validate_latency(space, table, n=args.validate, progress=log, precision=precision)
            table.calibration[key]["validation"] = result
            table.save(out)
            keys = ("median_abs_error", "max_abs_error", "median_abs_ratio_error", "max_abs_ratio_error")
            summary["validation" + suffix] = {k: result[k] for k in keys}
    print(json.dumps(summary, indent=1))
    return 0
