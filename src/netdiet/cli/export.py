"""`netdiet export`: the ONNX file a runtime runs, from a `netdiet train` or `netdiet compress` run.

A quantized run (compressed with bits below 32) becomes int8 QDQ ONNX carrying its learned scales, so
ONNX Runtime runs QLinearConv / QGemm kernels; `--int8` on a float run quantizes it first (post-training:
BN folded, 8-bit weights and activations, ranges calibrated on the run's training data). The file is
checked against the PyTorch model on real batches before it is put in place.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from torch import nn

from netdiet.cli.model_source import load_run
from netdiet.data import DataSpec, build_data
from netdiet.errors import NetdietError
from netdiet.quant import prepare_quantized, quantized_layers


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's model as ONNX (int8 QDQ for quantized models, or with --int8)",
        description="Write the model of a `netdiet train` or `netdiet compress` run directory as ONNX.",
    )
    p.add_argument(
        "--checkpoint", required=True, help="directory written by `netdiet train` or `netdiet compress`"
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="int8 QDQ ONNX: a quantized run keeps its learned scales; a float run is quantized first "
        "(post-training, calibrated on its training data)",
    )
    p.add_argument(
        "--int8-mode",
        choices=["auto", "static", "dynamic"],
        default="auto",
        help="for a float run: static (calibrated QDQ; CNNs) or dynamic (activations quantized per batch "
        "at run time; transformers); auto picks static for models with convolutions, else dynamic",
    )
    p.add_argument("--out", help="ONNX file to write (default: CHECKPOINT/model.onnx or model.int8.onnx)")
    p.add_argument("--data-dir", help="where the data is now, if it moved since training")
    p.add_argument("--time", action="store_true", help="also time ONNX Runtime at batch 1 and 64 (1 thread)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(handler=run)


def _batches(run_dir: Path, meta: dict[str, Any], data_dir: str | None) -> list[Any]:
    from netdiet.compress import calibration_batches

    data = dict(meta["data"])
    if data_dir:
        data["data_dir"] = data_dir
    tok = run_dir / meta["tokenizer"] if meta.get("tokenizer") else None
    if tok is not None and not tok.is_file():
        raise NetdietError(f"{tok}: the run's tokenizer is missing; export checks the model on real inputs")
    return calibration_batches(build_data(DataSpec.from_json(data), tokenizer_path=tok).train)


def run(args: argparse.Namespace) -> int:
    from netdiet.export.int8 import to_onnx_dynamic_int8, to_onnx_int8
    from netdiet.export.onnx import onnx_latency, to_onnx

    run_dir = Path(args.checkpoint)
    model, meta = load_run(run_dir)
    model.eval()
    batches = _batches(run_dir, meta, args.data_dir)
    first = batches[0] if isinstance(batches[0], (tuple, list)) else (batches[0],)
    example = tuple(t[:1] for t in first)
    quantized = bool(quantized_layers(model))
    int8 = args.int8 or quantized
    out = Path(args.out) if args.out else run_dir / ("model.int8.onnx" if int8 else "model.onnx")
    record: dict[str, Any] = {"checkpoint": str(run_dir), "int8": int8}
    if int8:
        mode = args.int8_mode
        if mode == "auto":
            has_conv = any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
            mode = "static" if quantized or has_conv else "dynamic"
        if quantized and mode == "dynamic":
            raise NetdietError(
                "this run is quantized with learned scales: export it static (--int8-mode static)"
            )
        if mode == "dynamic":
            written = to_onnx_dynamic_int8(model, example, out, batches)
            record["quantized_here"] = "dynamic: int8 weights, activations quantized per batch at run time"
        else:
            if not quantized:
                model, _ = prepare_quantized(model, example, batches)
                record["quantized_here"] = "post-training static: 8-bit weights and activations, calibrated"
            written = to_onnx_int8(model, example, out, batches)
        record["mode"] = mode
        record.update(
            path=str(written.path),
            layers=written.layers,
            int8_kernels=written.int8_kernels,
            max_rel_error=written.max_rel_error,
            top1_agreement=written.top1_agreement,
        )
        path = written.path
    else:
        path = to_onnx(model, example, out)
        record["path"] = str(path)
    record["file_bytes"] = path.stat().st_size
    if args.time:
        for b in (1, 64):
            x = tuple(t.expand(b, *t.shape[1:]).contiguous() for t in example)
            record[f"onnxruntime_ms_b{b}"] = onnx_latency(path, x, threads=1, repeats=30 if b == 1 else 10)
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print(f"wrote {path} ({record['file_bytes'] / 1e6:.2f} MB)")
        if int8:
            kernels = ", ".join(f"{k} x{v}" for k, v in sorted(record["int8_kernels"].items())) or "none"
            print(
                f"  int8 kernels in ONNX Runtime: {kernels}; max rel. error vs PyTorch {record['max_rel_error']:.4f}"
            )
        for b in (1, 64):
            if f"onnxruntime_ms_b{b}" in record:
                print(f"  ONNX Runtime, batch {b}: {record[f'onnxruntime_ms_b{b}']:.3f} ms")
    return 0
