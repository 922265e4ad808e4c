"""`netdiet demo`: the whole job on built-in data in a few minutes on a laptop CPU.

Trains a small ResNet on scikit-learn's digits (real handwritten digits, shipped with scikit-learn, so
nothing is downloaded), compresses it to half its FLOPs with l1l2 in one training run, fine-tunes it
with distillation, and prints the before/after table: accuracy, exact FLOPs, params, measured latency.
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
        help="train, compress to 50%% FLOPs and report, on built-in data (a few minutes on CPU)",
        description="Train a small ResNet on scikit-learn's digits, compress it with l1l2 to a FLOPs budget, "
        "fine-tune, and print accuracy, FLOPs, params and latency before and after, next to the dense model "
        "trained for the same extra epochs (so the comparison is at equal training).",
    )
    p.add_argument("--budget", default="flops=0.5", help="budget (default flops=0.5)")
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
        f"fine-tuning with distillation ({args.finetune_epochs} epochs)"
    )
    result = compress(
        dense,
        data.train,
        budget,
        epochs=args.compress_epochs,
        finetune_epochs=args.finetune_epochs,
        eval_data=data.eval["val"],
        train_config=finetune,
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
    for b in (1, 64):
        key = f"latency_ms_b{b}"
        ratio = c[key] / d[key]
        note = f"{ratio:.2f}x" + (" SLOWER" if ratio > 1 else "")
        table.add_row(f"CPU latency, batch {b} (ms)", f"{d[key]:.2f}", f"{d[key]:.2f}", f"{c[key]:.2f}", note)
    console.print(table)
    console.print(
        f"slim model: {out}/ (recipe.json + model.safetensors); report: {out / 'report.md'}; "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    return 0
