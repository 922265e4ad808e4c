"""`netdiet demo`: the whole job on built-in data in a few minutes on a laptop CPU.

Trains a small ResNet on scikit-learn's digits (real handwritten digits, shipped with scikit-learn, so
nothing is downloaded), compresses it to 3% of its fp32 bit-operations - l1l2 prunes it to half its
FLOPs in one training run and every layer runs in int8 - fine-tunes it quantization-aware with
distillation, exports the int8 ONNX file, and prints the before/after table: accuracy, exact FLOPs,
params, BOPs, file size and ONNX Runtime latency of the dense fp32 file against the int8 one.
The dense model is also trained for as many extra epochs as the compressed one (the control), because
extra training alone can make a compressed model look better than its dense parent.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from netdiet import zoo
from netdiet.atomic import StagedDir, atomic_write_json
from netdiet.cli.compress import write_metrics
from netdiet.compress import compress
from netdiet.data import DataSpec, build_data
from netdiet.export import save
from netdiet.methods import Budget
from netdiet.report.markdown import write_report
from netdiet.train import TrainConfig, evaluate, fit


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="train, prune and quantize to 3%% of the BOPs, export int8 and report, on built-in data (minutes)",
        description="Train a small ResNet on scikit-learn's digits, compress it with l1l2 and int8 to a BOPs "
        "budget, fine-tune, export int8 ONNX, and print accuracy, FLOPs, params, size and ONNX Runtime latency "
        "before and after, next to the dense model trained for the same extra epochs (equal training).",
    )
    p.add_argument(
        "--budget",
        default="bops=0.03",
        help="budget (default bops=0.03: int8 everywhere is 0.0625, so about half the FLOPs are pruned too)",
    )
    p.add_argument("--bits", type=int, default=None, help="bits (default 8 for a bops budget, else 32)")
    p.add_argument("--epochs", type=int, default=15, help="dense training epochs (default 15)")
    p.add_argument("--compress-epochs", type=int, default=4, help="l1l2 epochs (default 4)")
    p.add_argument("--finetune-epochs", type=int, default=4, help="fine-tune epochs (default 4)")
    p.add_argument(
        "--out",
        default="netdiet-demo",
        help="output directory (default ./netdiet-demo); it appears only when the demo is complete",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out once the demo is done")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 120)  # logs keep whole rows
    t0 = time.perf_counter()
    budget = Budget.parse(args.budget)
    staged = StagedDir(args.out, overwrite=args.overwrite, resume=False)
    stage = staged.prepare()
    try:
        return _demo(args, budget, staged, stage, console, t0)
    except BaseException:
        staged.discard_if_empty()
        raise


def _demo(
    args: argparse.Namespace, budget: Budget, staged: StagedDir, stage: Path, console: Any, t0: float
) -> int:
    from rich.table import Table

    torch.manual_seed(args.seed)
    data = build_data(DataSpec("digits", batch_size=64, image_size=32, seed=args.seed))
    model = zoo.build("resnet20", num_classes=data.num_classes)
    extra = args.compress_epochs + args.finetune_epochs
    console.print(f"[bold]1/4[/] training a dense ResNet-20 on digits for {args.epochs} epochs")
    cfg = TrainConfig(epochs=args.epochs, lr=0.05, seed=args.seed, warmup_epochs=1, progress=False)
    dense = fit(model, data.train, data.eval, cfg).model.eval()
    finetune = TrainConfig(lr=0.02, seed=args.seed, progress=False)
    console.print(
        f"[bold]2/4[/] control: the dense model trained {extra} epochs more with the fine-tune settings, "
        "so the comparison below is at equal training"
    )
    control = fit(dense, data.train, {}, replace(finetune, epochs=extra)).model.eval()
    console.print(
        f"[bold]3/4[/] compressing to {budget} with l1l2 ({args.compress_epochs} gated epochs), then "
        f"fine-tuning with distillation ({args.finetune_epochs} epochs), exporting and timing ONNX"
    )
    result = compress(
        dense,
        data.train,
        budget,
        epochs=args.compress_epochs,
        finetune_epochs=args.finetune_epochs,
        eval_data=data.eval["val"],
        train_config=finetune,
        bits=args.bits,
        latency_batches=(1, 64),
        progress=False,
    )
    console.print("[bold]4/4[/] measuring test accuracy of all three models")
    report = result.report
    report["run"] = Path(args.out).name
    test = data.eval["test"]
    report["dense"]["test_accuracy"] = evaluate(dense, test)["accuracy"]
    report["compressed"]["test_accuracy"] = evaluate(result.model, test)["accuracy"]
    report["control"] = {
        "what": f"the dense model trained {extra} more epochs (as many as the compressed one)",
        "epochs": args.epochs + extra,
        "accuracy": evaluate(control, data.eval["val"])["accuracy"],
        "test_accuracy": evaluate(control, test)["accuracy"],
    }
    save(result.model, stage)
    onnx_file = None
    if report.get("bits", 32) < 32 and "skipped" not in (report.get("int8_onnx") or {"skipped": ""}):
        from netdiet.compress import calibration_batches
        from netdiet.export.int8 import to_onnx_int8

        example = tuple(t[:1] for t in next(iter(data.train)).inputs)
        onnx_file = to_onnx_int8(
            result.model, example, stage / "model.int8.onnx", calibration_batches(data.train)
        )
    write_metrics(stage, result.trace, result.history)
    if result.snapshots:
        atomic_write_json(stage / "gates.json", result.snapshots)
    atomic_write_json(stage / "report.json", report)
    write_report([stage], stage)
    out = staged.commit()
    table = Table(title="netdiet demo: ResNet-20 on digits (32x32), before and after")
    for col in (
        "",
        f"dense ({args.epochs} ep)",
        f"dense (+{extra} ep)",
        f"compressed (+{extra} ep)",
        "ratio",
    ):
        table.add_column(col, justify="right")
    d, c, k = report["dense"], report["compressed"], report["control"]
    table.add_row(
        "test accuracy (%)",
        f"{100 * d['test_accuracy']:.2f}",
        f"{100 * k['test_accuracy']:.2f}",
        f"{100 * c['test_accuracy']:.2f}",
        f"{100 * (c['test_accuracy'] - k['test_accuracy']):+.2f} vs equal training",
    )
    for name, key, scale in (("FLOPs (M, mult-add = 2)", "flops", 1e6), ("params (K)", "params", 1e3)):
        table.add_row(
            name,
            f"{d[key] / scale:.2f}",
            f"{d[key] / scale:.2f}",
            f"{c[key] / scale:.2f}",
            f"{c[key] / d[key]:.2f}x",
        )
    if d.get("bops") and c.get("bops") is not None:
        table.add_row(
            "BOPs (G)",
            f"{d['bops'] / 1e9:.2f}",
            f"{d['bops'] / 1e9:.2f}",
            f"{c['bops'] / 1e9:.3f}",
            f"{c['bops'] / d['bops']:.3f}x",
        )
    onnx = report.get("int8_onnx") or {}
    if "skipped" in onnx:
        console.print(f"[yellow]int8 ONNX not measured: {onnx['skipped']}[/]")
    elif onnx:
        table.add_row(
            "ONNX file (KB)",
            f"{onnx['dense_file_bytes'] / 1024:.0f}",
            f"{onnx['dense_file_bytes'] / 1024:.0f}",
            f"{onnx['int8_file_bytes'] / 1024:.0f}",
            f"{onnx['int8_file_bytes'] / onnx['dense_file_bytes']:.2f}x",
        )
    for b in (1, 64):
        if onnx and "skipped" not in onnx:
            dense_ms, small_ms, what = onnx[f"dense_ms_b{b}"], onnx[f"int8_ms_b{b}"], "ONNX Runtime"
        else:
            dense_ms, small_ms, what = d[f"latency_ms_b{b}"], c[f"latency_ms_b{b}"], "PyTorch CPU"
        ratio = small_ms / dense_ms
        note = f"{1 / ratio:.2f}x faster" if ratio <= 1 else f"{ratio:.2f}x SLOWER"
        table.add_row(
            f"{what}, batch {b} (ms)", f"{dense_ms:.2f}", f"{dense_ms:.2f}", f"{small_ms:.2f}", note
        )
    console.print(table)
    deployable = f", int8 ONNX: {out / 'model.int8.onnx'}" if onnx_file is not None else ""
    console.print(
        f"slim model: {out}/ (recipe.json + model.safetensors{deployable}); report: {out / 'report.md'}; "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    return 0
