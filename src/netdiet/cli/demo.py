"""`netdiet demo`: the whole job on built-in data in a few minutes on a laptop CPU.

Trains a small ResNet on scikit-learn's digits (real handwritten digits, shipped with scikit-learn, so
nothing is downloaded), compresses it to half its FLOPs with l1l2 in one training run, fine-tunes it
with distillation, and prints the before/after table: accuracy, exact FLOPs, params, measured latency.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from netdiet import zoo
from netdiet.cli.compress import write_metrics
from netdiet.compress import compress
from netdiet.data import DataSpec, build_data
from netdiet.export import save
from netdiet.methods import Budget
from netdiet.report.markdown import write_report
from netdiet.train import TrainConfig, evaluate, fit
from netdiet.train.atomic import atomic_write_json


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="train, compress to 50%% FLOPs and report, on built-in data (a few minutes on CPU)",
        description="Train a small ResNet on scikit-learn's digits, compress it with l1l2 to a FLOPs budget, "
        "fine-tune, and print accuracy, FLOPs, params and latency before and after.",
    )
    p.add_argument("--budget", default="flops=0.5", help="budget (default flops=0.5)")
    p.add_argument("--epochs", type=int, default=15, help="dense training epochs (default 15)")
    p.add_argument("--compress-epochs", type=int, default=4, help="l1l2 epochs (default 4)")
    p.add_argument("--finetune-epochs", type=int, default=4, help="fine-tune epochs (default 4)")
    p.add_argument("--out", default="netdiet-demo", help="output directory (default ./netdiet-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t0 = time.perf_counter()
    budget = Budget.parse(args.budget)
    torch.manual_seed(args.seed)
    data = build_data(DataSpec("digits", batch_size=64, image_size=32, seed=args.seed))
    model = zoo.build("resnet20", num_classes=data.num_classes)
    console.print(f"[bold]1/3[/] training a dense ResNet-20 on digits for {args.epochs} epochs")
    cfg = TrainConfig(epochs=args.epochs, lr=0.05, seed=args.seed, warmup_epochs=1, progress=False)
    dense = fit(model, data.train, data.eval, cfg).model.eval()
    console.print(
        f"[bold]2/3[/] compressing to {budget.to_dict()} with l1l2, then fine-tuning with distillation"
    )
    result = compress(
        dense,
        data.train,
        budget,
        epochs=args.compress_epochs,
        finetune_epochs=args.finetune_epochs,
        eval_data=data.eval["val"],
        train_config=TrainConfig(lr=0.02, seed=args.seed, progress=False),
        latency_batches=(1, 64),
        progress=False,
    )
    report = result.report
    test = data.eval["test"]
    report["dense"]["test_accuracy"] = evaluate(dense, test)["accuracy"]
    report["compressed"]["test_accuracy"] = evaluate(result.model, test)["accuracy"]
    out = Path(args.out)
    save(result.model, out)
    write_metrics(out, result.trace, result.history)
    if result.snapshots:
        atomic_write_json(out / "gates.json", result.snapshots)
    atomic_write_json(out / "report.json", report)
    md = write_report([out], out)
    console.print("[bold]3/3[/] measured")
    table = Table(title="netdiet demo: ResNet-20 on digits (32x32), before and after")
    for col in ("", "dense", "compressed", "ratio"):
        table.add_column(col, justify="right")
    d, c = report["dense"], report["compressed"]
    rows = [
        ("test accuracy (%)", 100 * d["test_accuracy"], 100 * c["test_accuracy"], None),
        ("FLOPs (M, mult-add = 2)", d["flops"] / 1e6, c["flops"] / 1e6, c["flops"] / d["flops"]),
        ("params (K)", d["params"] / 1e3, c["params"] / 1e3, c["params"] / d["params"]),
        (
            "CPU latency, batch 1 (ms)",
            d["latency_ms_b1"],
            c["latency_ms_b1"],
            c["latency_ms_b1"] / d["latency_ms_b1"],
        ),
        (
            "CPU latency, batch 64 (ms)",
            d["latency_ms_b64"],
            c["latency_ms_b64"],
            c["latency_ms_b64"] / d["latency_ms_b64"],
        ),
    ]
    for name, a, b, r in rows:
        table.add_row(name, f"{a:.2f}", f"{b:.2f}", "" if r is None else f"{r:.2f}x")
    console.print(table)
    console.print(
        f"slim model: {out}/ (recipe.json + model.safetensors); report: {md}; "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    return 0
