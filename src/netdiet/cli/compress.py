"""`netdiet compress`: from a dense `netdiet train` run to a slim model under a budget, with its report.

The output directory holds the slim model (`recipe.json` + `model.safetensors`, loadable with
`netdiet.load(OUT, zoo.build(...))`), `base.json` (which zoo model and config to rebuild the base from)
and `report.json` (budget, accuracy on val and the reported split, exact FLOPs/params, CPU latency).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from netdiet.atomic import StagedDir, atomic_write_json, atomic_write_text
from netdiet.cli.model_source import (
    BASE_FILE,
    BASE_FORMAT,
    absolute_factory,
    base_record,
    is_factory,
    load_run,
    load_user_model,
)
from netdiet.compress import compress
from netdiet.data import DataSpec, build_data, dataset_names
from netdiet.errors import NetdietError
from netdiet.export import save
from netdiet.methods import METHODS, Budget, options_of
from netdiet.train import TrainConfig, evaluate
from netdiet.train.distributed import DistContext, init_distributed, shutdown_distributed


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
        "--checkpoint",
        help="run directory of the dense model (`netdiet train --out`); or give --model, --weights, --data",
    )
    p.add_argument(
        "--model",
        help="your own model: module:factory or path/to/file.py:factory (a function that builds it with no "
        "arguments), with --weights and --data; with --checkpoint, a zoo name to check the run against",
    )
    p.add_argument(
        "--weights", help="safetensors weights of --model (e.g. from safetensors.torch.save_model)"
    )
    p.add_argument("--data", help=f"data set for --model: {', '.join(dataset_names())}")
    p.add_argument("--val-size", type=int, help="with --data: examples held out of train for validation")
    p.add_argument(
        "--budget",
        required=True,
        help="METRIC=VALUE: flops=0.5 (half of dense), flops=40M (absolute), latency=0.6 (60%% of the dense "
        "model's measured latency), latency_ms=2.5, bops=0.1 (bit-operations, 10%% of fp32 x fp32)",
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
    p.add_argument(
        "--create-table",
        action="store_true",
        help="profile into --latency-table when that file does not exist yet (otherwise a missing path is an "
        "error: a typo must not cost minutes of profiling)",
    )
    p.add_argument("--force-table", action="store_true", help="use a latency table measured elsewhere")
    p.add_argument(
        "--no-latency-fixup",
        action="store_true",
        help="keep an export that measures over its latency budget (default: tighten it before the fine-tune)",
    )
    p.add_argument(
        "--method", default="l1l2", choices=sorted(METHODS), help="compression method (default l1l2)"
    )
    p.add_argument(
        "--method-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the method's config, e.g. weight_bits=[4,8] or pruning_periods=3 for geta "
        "(JSON values; repeatable)",
    )
    p.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="epochs of gated training (l1l2 only; may be fractional; default 1)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=float,
        default=None,
        help="epochs of distilled fine-tuning (default 1; ptq: 0); with --bits below 32 it is "
        "quantization-aware training",
    )
    p.add_argument(
        "--bits",
        type=int,
        default=None,
        help="weight and activation bits of every conv/linear (default: 8 for a bops budget and for ptq, "
        "else 32 = float); below 32 the result is also written as int8 ONNX (model.int8.onnx)",
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
    p.add_argument(
        "--out",
        required=True,
        help="output directory; it appears only when the run is complete (until then the run works in "
        ".OUT.partial beside it, which --resume continues)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out once the new run is done"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --out")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 on a shared machine)",
    )
    p.add_argument("--json", action="store_true", help="print the before/after result as JSON")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (a line per phase and epoch stays)"
    )
    p.set_defaults(handler=run)


def check_options(args: argparse.Namespace, budget: Budget) -> None:
    """Refuse options that would be silently ignored: they mean the user expects something else."""
    parse_method_options(args.method, args.method_opt)  # unknown keys refused before anything is written
    if args.latency_batch < 1:
        raise NetdietError("--latency-batch must be >= 1")
    if args.bits is not None and not 2 <= args.bits <= 32:
        raise NetdietError(f"--bits must be in [2, 32], got {args.bits}")
    if (args.finetune_epochs is not None and args.finetune_epochs < 0) or (
        args.epochs is not None and args.epochs < 0
    ):
        raise NetdietError("--epochs and --finetune-epochs must be >= 0")
    if args.threads is not None and args.threads < 1:
        raise NetdietError(f"--threads must be >= 1, got {args.threads}")
    trains = METHOD_TRAINS.get(args.method, False)
    if args.epochs is not None and not trains:
        raise NetdietError(
            f"--epochs is the length of a gated training phase; {args.method} is one-shot and trains only in "
            "the fine-tune: use --finetune-epochs"
        )
    if args.no_lowrank and not takes_option(args.method, "lowrank"):
        raise NetdietError(f"--no-lowrank does not apply: {args.method} never factorises layers")
    latency_used = budget.needs_latency or args.latency_table
    for flag, value in (("--latency-backend", args.latency_backend), ("--create-table", args.create_table)):
        if value and not latency_used:
            raise NetdietError(
                f"{flag} applies to latency budgets or --latency-table; the budget is {budget}"
            )
    if args.latency_batch != 1 and not latency_used:
        raise NetdietError(
            f"--latency-batch applies to latency budgets or --latency-table; the budget is {budget}"
        )
    if args.create_table and not args.latency_table:
        raise NetdietError("--create-table needs --latency-table PATH to profile into")
    if args.latency_table and not Path(args.latency_table).is_file() and not args.create_table:
        raise NetdietError(
            f"--latency-table {args.latency_table} does not exist; check the path, or pass --create-table to "
            "profile this model into it now (a few minutes)"
        )


METHOD_TRAINS = {name: bool(getattr(cls, "needs_training", False)) for name, cls in METHODS.items()}


def parse_method_options(method: str, items: list[str]) -> dict[str, Any]:
    """--method-opt KEY=VALUE pairs: values read as JSON (lists become tuples), else kept as text; keys
    checked against the method's config, so a typo is refused with the options it takes."""
    out: dict[str, Any] = {}
    known = options_of(method)
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise NetdietError(f"--method-opt takes KEY=VALUE, got {item!r}")
        if key not in known:
            raise NetdietError(
                f"--method-opt {key}: method '{method}' has no such option; its options are {sorted(known)}"
            )
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def takes_option(method: str, option: str) -> bool:
    return option in options_of(method)


def say(args: argparse.Namespace, text: str) -> None:
    """One line per phase, so a log shows what the run is doing even without progress bars."""
    if not args.json:
        print(f"netdiet compress: {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    budget = Budget.parse(args.budget)
    check_options(args, budget)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ctx = init_distributed("cpu")
    if ctx.enabled:
        return _run_data_parallel(args, ctx)
    return _run(args, budget)


def _run_data_parallel(args: argparse.Namespace, ctx: DistContext) -> int:
    """Under torchrun: every rank trains on its shard of each global batch (DDP averages the weights'
    gradients, the Compressor the gates'), so all ranks export the same model; rank 0 writes --out,
    the others work in a private folder that is removed."""
    try:
        _check_data_parallel(args)
    except NetdietError:
        shutdown_distributed(ctx)
        raise
    args.rank, args.world_size = ctx.rank, ctx.world_size
    if ctx.is_main:
        try:
            return _run(args, Budget.parse(args.budget))
        finally:
            shutdown_distributed(ctx)
    with tempfile.TemporaryDirectory(prefix=f"netdiet-rank{ctx.rank}-") as tmp:
        args.out, args.overwrite, args.resume, args.json = str(Path(tmp) / "out"), True, False, True
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            try:
                return _run(args, Budget.parse(args.budget))
            finally:
                shutdown_distributed(ctx)


def _check_data_parallel(args: argparse.Namespace) -> None:
    """What a data-parallel compress cannot keep equal on every rank is refused before any work (every
    rank raises the same error, so none waits for the others)."""
    if args.resume:
        raise NetdietError(
            "--resume is not supported under torchrun (only rank 0 keeps the resumable state); rerun the "
            "whole compress, or resume it in one process"
        )
    if Budget.parse(args.budget).needs_latency or args.latency_table:
        raise NetdietError(
            "latency budgets are not supported under torchrun: each rank would time and calibrate the latency "
            "table on its own; compress to a latency budget in one process"
        )
    if METHODS[args.method].needs_evaluator:
        raise NetdietError(
            f"--method {args.method} scores candidate sub-networks with BatchNorm re-estimated on each rank's "
            "shard of the data, so ranks would choose different models; run it in one process"
        )


def _run(args: argparse.Namespace, budget: Budget) -> int:
    staged = StagedDir(args.out, overwrite=args.overwrite, resume=args.resume)
    model, meta, run_dir = source_model(args)
    stage = staged.prepare()
    try:
        return _compress_into(args, budget, staged, stage, run_dir, model, meta)
    except BaseException:
        staged.discard_if_empty()  # a run that failed before leaving anything resumable leaves nothing
        raise


def source_model(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, Any], Path | None]:
    """The dense model and what it was trained with: a `netdiet train` run, or the user's own model."""
    if args.checkpoint:
        for flag in ("weights", "data", "val_size"):
            if getattr(args, flag) is not None:
                raise NetdietError(
                    f"--{flag.replace('_', '-')} is for your own --model; a --checkpoint run brings its own"
                )
        run_dir = Path(args.checkpoint)
        model, meta = load_run(run_dir)
        if meta.get("format") == BASE_FORMAT:
            raise NetdietError(
                f"{run_dir} is already a compressed run; compress its dense run ({meta.get('model')}) "
                "to the tighter budget instead"
            )
        if args.model and args.model != meta["model"]:
            raise NetdietError(
                f"--model {args.model} does not match the run directory's model {meta['model']}"
            )
        return model, meta, run_dir
    if not args.model:
        raise NetdietError(
            "say which model to compress: --checkpoint RUN_DIR (from `netdiet train`), or your own model with "
            "--model module:factory --weights FILE.safetensors --data NAME"
        )
    if not is_factory(args.model):
        raise NetdietError(
            f"--model {args.model!r} without --checkpoint must be module:factory (your own model); zoo "
            "models are compressed from their `netdiet train` run directory with --checkpoint"
        )
    missing = [f"--{f}" for f in ("weights", "data") if getattr(args, f) is None]
    if missing:
        raise NetdietError(f"--model {args.model} needs {' and '.join(missing)}")
    model = load_user_model(args.model, args.weights)
    try:
        spec = DataSpec(args.data, data_dir=args.data_dir, val_size=args.val_size, seed=args.seed)
    except ValueError as exc:
        raise NetdietError(str(exc)) from None
    meta = {"model": args.model, "factory": absolute_factory(args.model), "data": spec.to_json()}
    meta["train_config"] = {}
    return model, meta, None


def _compress_into(
    args: argparse.Namespace,
    budget: Budget,
    staged: StagedDir,
    stage: Path,
    run_dir: Path | None,
    model: torch.nn.Module,
    meta: dict[str, Any],
) -> int:
    data = dict(meta["data"])
    if args.data_dir:
        data["data_dir"] = args.data_dir
    if args.batch_size:
        data["batch_size"] = args.batch_size
    if args.subset:
        data["subset"] = args.subset
    spec = DataSpec.from_json(data)
    tok: Path | None = None
    if run_dir is not None and meta.get("tokenizer"):
        tok = run_dir / meta["tokenizer"]
        if not tok.is_file():
            raise NetdietError(
                f"{tok}: the dense run's tokenizer is missing; compression needs its vocabulary"
            )
    elif spec.input_kind == "tokens":
        tok = stage / "tokenizer.json"  # the user's own text model: trained here, kept with the result
    say(args, f"loading {spec.name} as the dense run did" if run_dir else f"loading {spec.name}")
    rank, world = getattr(args, "rank", 0), getattr(args, "world_size", 1)
    bundle = build_data(spec, rank=rank, world_size=world, tokenizer_path=tok)
    if world > 1:  # every rank evaluates whole splits, so the report is rank 0's and complete
        bundle = replace(bundle, eval=build_data(spec, tokenizer_path=tok).eval)
    if tok is not None and tok != stage / "tokenizer.json":
        shutil.copyfile(tok, stage / "tokenizer.json")  # the result evaluates without its dense run
    dense_cfg = dict(meta.get("train_config") or {})
    optimizer = args.optimizer or dense_cfg.get("optimizer", "sgd")
    lr = args.lr if args.lr is not None else (0.02 if optimizer == "sgd" else 5e-5)
    cfg = TrainConfig(
        optimizer=optimizer,
        lr=lr,
        weight_decay=float(dense_cfg.get("weight_decay", 5e-4)),
        seed=args.seed,
        grad_clip=5.0 if optimizer == "sgd" else 1.0,  # a guard for fine-tuning, as compress() defaults
        progress=not args.no_progress and not args.json and sys.stderr.isatty(),
        log_epochs=not args.json,  # --json prints one JSON document and nothing else
    )
    options: dict[str, Any] = {"lowrank": False} if args.no_lowrank else {}
    options.update(parse_method_options(args.method, args.method_opt))
    epochs = args.epochs if args.epochs is not None else (1.0 if METHOD_TRAINS.get(args.method) else 0.0)
    val = bundle.eval.get("val")
    table_path = None
    if args.latency_table:
        table_path = Path(args.latency_table)
    elif budget.needs_latency:
        table_path = stage / "latency_table.json"
    gated = f"{epochs:g} gated epoch(s) + " if epochs else ""
    if table_path is not None:
        what = f"reading {table_path}" if table_path.is_file() else f"profiling this model into {table_path}"
        say(args, f"latency table: {what}, calibrating it for this model if needed (can take minutes)")
    finetune = (
        args.finetune_epochs
        if args.finetune_epochs is not None
        else float(METHODS[args.method].default_finetune_epochs)
    )
    say(args, f"{args.method} to {budget}: {gated}{finetune:g} fine-tune epoch(s)")
    result = compress(
        model,
        bundle.train,
        budget,
        method=args.method,
        epochs=epochs,
        finetune_epochs=finetune,
        bits=args.bits,
        eval_data=val,
        train_config=cfg,
        method_options=options,
        distill=args.distill,
        latency_table=table_path,
        latency_backend=args.latency_backend,
        latency_batch=args.latency_batch,
        force_table=args.force_table,
        latency_fixup=not args.no_latency_fixup,
        progress=not args.no_progress and not args.json and sys.stderr.isatty(),
        work_dir=staged.state_dir,
    )
    report = result.report
    report["run"] = Path(args.out).name
    reported = [s for s in bundle.eval if s != "val"]
    say(args, f"evaluating both models on {', '.join(reported) or 'no reported split'}")
    for split in reported:
        report["dense"][f"{split}_accuracy"] = evaluate(model, bundle.eval[split])["accuracy"]
        report["compressed"][f"{split}_accuracy"] = evaluate(result.model, bundle.eval[split])["accuracy"]
    report["base_run"] = str(run_dir) if run_dir is not None else None
    report["base_model"] = meta["model"]
    save(result.model, stage)
    on_ort = (report.get("latency") or {}).get("backend") == "onnxruntime"
    quantized = report.get("bits", 32) < 32
    if args.onnx or on_ort or quantized:  # the runtime the user targets is timed at batch 1 and 64
        say(
            args, f"exporting to {'int8 ' if quantized else ''}ONNX and timing ONNX Runtime at batch 1 and 64"
        )
        onnx_report(result.model, model, bundle, stage, report, threads=args.threads or 1, int8=quantized)
    write_metrics(stage, result.trace, result.history)
    if result.snapshots:
        atomic_write_json(stage / "gates.json", result.snapshots)
    base = base_record(meta, {**data, "subset": None}, "tokenizer.json" if tok is not None else None)
    atomic_write_json(stage / BASE_FILE, base)
    atomic_write_json(stage / "report.json", report)
    out = staged.commit()
    keys = ("budget", "dense", "compressed", "latency")
    if args.json:
        print(json.dumps({k: report[k] for k in keys if k in report}, indent=1))
    else:
        print_summary(report, out)
    return 0


def onnx_report(
    slim: torch.nn.Module,
    dense: torch.nn.Module,
    bundle: Any,
    stage: Path,
    report: dict[str, Any],
    threads: int,
    int8: bool = False,
) -> None:
    """model.onnx (one self-contained file; model.int8.onnx for a quantized model) and ONNX Runtime
    latency of both models at batch 1 and 64."""
    from netdiet.compress import calibration_batches
    from netdiet.export.int8 import to_onnx_int8
    from netdiet.export.onnx import onnx_latency, to_onnx

    example = tuple(t[:1] for t in next(iter(bundle.train)).inputs)
    if int8:
        written = to_onnx_int8(slim, example, stage / "model.int8.onnx", calibration_batches(bundle.train))
        onnx_path = written.path
        report["compressed"]["onnx_int8_kernels"] = written.int8_kernels
        report["compressed"]["onnx_file_bytes"] = onnx_path.stat().st_size
    else:
        onnx_path = to_onnx(slim, example, stage / "model.onnx")
    dense_path = to_onnx(dense, example, stage / "state" / "dense.onnx")
    for b in (1, 64):
        x = tuple(t.expand(b, *t.shape[1:]).contiguous() for t in example)
        report["dense"][f"onnxruntime_ms_b{b}"] = onnx_latency(dense_path, x, threads=threads)
        report["compressed"][f"onnxruntime_ms_b{b}"] = onnx_latency(onnx_path, x, threads=threads)
    dense_path.unlink()


def summary_rows(report: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(what, dense, compressed, ratio or note) for every measured number both models have."""
    d, c = report["dense"], report["compressed"]
    rows: list[tuple[str, float, float, str]] = []
    for key in sorted(k for k in d if k.endswith("accuracy") and d[k] is not None and c.get(k) is not None):
        rows.append(
            (
                ("val accuracy" if key == "accuracy" else key.replace("_", " ")) + " (%)",
                100 * d[key],
                100 * c[key],
                f"{100 * (c[key] - d[key]):+.2f}",
            )
        )
    for key, label, scale in (
        ("flops", "FLOPs (M)", 1e-6),
        ("params", "params (K)", 1e-3),
        ("bops", "BOPs (G)", 1e-9),
    ):
        if d.get(key) and c.get(key) is not None:
            rows.append((label, d[key] * scale, c[key] * scale, f"{c[key] / d[key]:.3f}x"))
    for key in sorted(k for k in d if k.startswith(("latency_ms_b", "onnxruntime_ms_b")) and k in c):
        ratio = c[key] / d[key]
        note = f"{ratio:.2f}x" + ("  SLOWER than dense" if ratio > 1.0 else "")
        rows.append((key.replace("_ms_b", " ms, batch ").replace("latency", "PyTorch"), d[key], c[key], note))
    return rows


def print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    budget = ", ".join(f"{k}={v:g}" for k, v in report["budget"].items())
    table = Table(title=f"netdiet compress: {report['method']} to {budget}")
    for col in ("", "dense", "compressed", "change"):
        table.add_column(col, justify="right")
    for name, a, b, note in summary_rows(report):
        table.add_row(name, f"{a:.2f}", f"{b:.2f}", note)
    console = Console()
    console.print(table)
    console.print(f"wrote {out}/ (recipe.json + model.safetensors, report.json, metrics.jsonl)")
