"""`netdiet compress`: from a dense `netdiet train` run to a slim model under a budget, with its report.

The output directory holds the slim model (`recipe.json` + `model.safetensors`, loadable with
`netdiet.load(OUT, zoo.build(...))`), `base.json` (which zoo model and config to rebuild the base from)
and `report.json` (budget, accuracy on val and the reported split, exact FLOPs/params, CPU latency).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from netdiet.compress import compress
from netdiet.data import DataSpec, build_data
from netdiet.errors import NetdietError
from netdiet.export import save
from netdiet.methods import METHODS, Budget
from netdiet.train import TrainConfig, evaluate, load_model
from netdiet.train.atomic import atomic_write_json, atomic_write_text


def write_metrics(out: Path, trace: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
    """metrics.jsonl: one record per gated step (relaxed cost, target, lambda, loss), then one per epoch."""
    rows = [{"kind": "gated_step", **t} for t in trace] + [{"kind": "epoch", **h} for h in history]
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compress",
        help="compress a trained model to a budget (FLOPs, params, bytes, BOPs, measured latency)",
        description=(
            "Compress the dense model of a `netdiet train` run directory to a budget in one training run "
            "(l1l2), or with a one-shot baseline (uniform, magnitude), then fine-tune it with distillation "
            "from the dense model and write the slim model and a report."
        ),
    )
    p.add_argument(
        "--checkpoint", required=True, help="run directory of the dense model (`netdiet train --out`)"
    )
    p.add_argument("--model", help="zoo model name; checked against the run directory if given")
    p.add_argument(
        "--budget",
        required=True,
        help="METRIC=VALUE: flops=0.5 (half of dense), flops=40M (absolute), latency=0.6 (60%% of the dense "
        "model's measured latency), latency_ms=2.5",
    )
    p.add_argument(
        "--latency-table",
        help="latency table from `netdiet profile` (completed and calibrated for this model if needed); "
        "without it a latency budget profiles now and writes OUT/latency_table.json",
    )
    p.add_argument(
        "--latency-backend",
        choices=["onnxruntime", "torch", "cuda", "synthetic"],
        help="backend to profile on when no table is given (default onnxruntime if installed)",
    )
    p.add_argument(
        "--latency-batch", type=int, default=1, help="batch size the latency budget is for (default 1)"
    )
    p.add_argument("--force-table", action="store_true", help="use a latency table measured elsewhere")
    p.add_argument(
        "--method", default="l1l2", choices=sorted(METHODS), help="compression method (default l1l2)"
    )
    p.add_argument(
        "--epochs",
        type=float,
        default=1,
        help="epochs of gated training (l1l2; may be fractional; default 1)",
    )
    p.add_argument(
        "--finetune-epochs", type=float, default=1, help="epochs of distilled fine-tuning (default 1)"
    )
    p.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default: 0.02 for SGD, 5e-5 AdamW)"
    )
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help="default: the dense run's")
    p.add_argument(
        "--batch-size", type=int, default=None, help="training batch size (default: the dense run's)"
    )
    p.add_argument("--subset", type=int, default=None, help="use only the first N training examples")
    p.add_argument("--data-dir", help="where the data is now, if it moved since training")
    p.add_argument("--no-lowrank", action="store_true", help="l1l2 without singular-value gates")
    p.add_argument("--distill", type=float, default=0.5, help="distillation weight in fine-tuning (0 = off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--onnx", action="store_true", help="also write model.onnx (fp32) and measure ONNX Runtime latency"
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    budget = Budget.parse(args.budget)
    if args.latency_batch is not None and args.latency_batch < 1:
        raise NetdietError("--latency-batch must be >= 1")
    if args.epochs < 0 or args.finetune_epochs < 0:
        raise NetdietError("--epochs and --finetune-epochs must be >= 0")
    run_dir = Path(args.checkpoint)
    model, meta = load_model(run_dir)
    if args.model and args.model != meta["model"]:
        raise NetdietError(f"--model {args.model} does not match the run directory's model {meta['model']}")
    data = dict(meta["data"])
    if args.data_dir:
        data["data_dir"] = args.data_dir
    if args.batch_size:
        data["batch_size"] = args.batch_size
    if args.subset:
        data["subset"] = args.subset
    tok = run_dir / meta["tokenizer"] if meta.get("tokenizer") else None
    bundle = build_data(DataSpec.from_json(data), tokenizer_path=tok)
    dense_cfg = dict(meta.get("train_config") or {})
    optimizer = args.optimizer or dense_cfg.get("optimizer", "sgd")
    lr = args.lr if args.lr is not None else (0.02 if optimizer == "sgd" else 5e-5)
    cfg = TrainConfig(
        optimizer=optimizer,
        lr=lr,
        weight_decay=float(dense_cfg.get("weight_decay", 5e-4)),
        seed=args.seed,
        grad_clip=5.0 if optimizer == "sgd" else 1.0,  # a guard for fine-tuning, as compress() defaults
        progress=not args.no_progress,
    )
    options = {"lowrank": not args.no_lowrank} if args.method == "l1l2" else {}
    val = bundle.eval.get("val")
    out = Path(args.out)
    table_path = None
    if args.latency_table:
        table_path = Path(args.latency_table)
    elif budget.needs_latency:
        table_path = out / "latency_table.json"
    result = compress(
        model,
        bundle.train,
        budget,
        method=args.method,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        eval_data=val,
        train_config=cfg,
        method_options=options,
        distill=args.distill,
        latency_table=table_path,
        latency_backend=args.latency_backend,
        latency_batch=args.latency_batch,
        force_table=args.force_table,
        progress=not args.no_progress,
    )
    report = result.report
    reported = [s for s in bundle.eval if s != "val"]
    for split in reported:
        report["dense"][f"{split}_accuracy"] = evaluate(model, bundle.eval[split])["accuracy"]
        report["compressed"][f"{split}_accuracy"] = evaluate(result.model, bundle.eval[split])["accuracy"]
    report["base_run"] = str(run_dir)
    save(result.model, out)
    if args.onnx:
        from netdiet.export.onnx import onnx_latency, to_onnx

        example = tuple(t[:1] for t in next(iter(bundle.train)).inputs)
        onnx_path = to_onnx(result.model, example, out / "model.onnx")
        dense_path = to_onnx(model, example, out / "dense.onnx")
        for b in (1, 64):
            x = tuple(t.expand(b, *t.shape[1:]).contiguous() for t in example)
            report["dense"][f"onnxruntime_ms_b{b}"] = onnx_latency(dense_path, x)
            report["compressed"][f"onnxruntime_ms_b{b}"] = onnx_latency(onnx_path, x)
        dense_path.unlink()
    write_metrics(out, result.trace, result.history)
    if result.snapshots:
        atomic_write_json(out / "gates.json", result.snapshots)
    atomic_write_json(out / "base.json", {"model": meta["model"], "model_config": meta["model_config"]})
    atomic_write_json(out / "report.json", report)
    keys = ("budget", "dense", "compressed", "latency")
    print(json.dumps({k: report[k] for k in keys if k in report}, indent=1))
    return 0
