"""`netdiet train`: train a zoo model on a data set from scratch, resumably, on one or many processes.

Settings are layered: built-in defaults < the run's own run.json (with --resume) < --config YAML <
explicit command-line options. The result is a run directory holding model.safetensors + model.json
(the dense checkpoint later commands start from), metrics.jsonl, the resumable checkpoint and, for
text, tokenizer.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from netdiet import zoo
from netdiet.data import DataSpec, build_data, dataset_names
from netdiet.errors import NetdietError
from netdiet.train import (
    TrainConfig,
    evaluate,
    fit_inplace,
    init_distributed,
    save_model,
    shutdown_distributed,
)
from netdiet.train.atomic import atomic_write_json

# dest -> (default, where it goes). Defaults live here, not in argparse, so YAML and run.json can sit
# between them and the command line.
DEFAULTS: dict[str, Any] = {
    "model": None,
    "data": None,
    "data_dir": None,
    "epochs": 1,
    "batch_size": 128,
    "eval_batch_size": 512,
    "subset": None,
    "val_size": None,
    "augment": True,
    "cache_dir": None,
    "image_size": 32,
    "max_len": 128,
    "vocab_size": 8192,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_epochs": 0.0,
    "label_smoothing": 0.0,
    "grad_clip": None,
    "amp": "auto",
    "device": "auto",
    "seed": 0,
    "progress": True,
    "threads": None,
    "model_opt": [],
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a zoo model (dense baseline) on a data set",
        description="Train a model from the netdiet zoo from scratch. Writes RUN_DIR/model.safetensors + "
        "model.json, metrics.jsonl and a resumable checkpoint. Launch with `torchrun --nproc_per_node N -m "
        "netdiet.cli.main train ...` for data-parallel training (gloo on CPU, nccl on GPU).",
    )
    p.add_argument("--model", help=f"zoo model name: {', '.join(zoo.names())}")
    p.add_argument("--data", help=f"data set: {', '.join(dataset_names())} (GLUE tasks read TSV files)")
    p.add_argument("--data-dir", help="directory or archive holding the data (e.g. ../shared/data)")
    p.add_argument("--out", required=True, help="run directory to create (or continue with --resume)")
    p.add_argument("--epochs", type=int, help="number of epochs (default 1)")
    p.add_argument("--subset", type=int, help="use only the first N training examples (of a fixed shuffle)")
    p.add_argument("--val-size", type=int, help="examples held out of train for per-epoch validation")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--seed", type=int, help="random seed for init, shuffling, augmentation, dropout (default 0)"
    )
    p.add_argument("--config", help="YAML file whose keys are these options' names (e.g. lr: 0.05)")
    p.add_argument("--batch-size", type=int, help="global training batch size (default 128)")
    p.add_argument("--eval-batch-size", type=int, help="evaluation batch size (default 512)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], help="optimizer (default sgd, Nesterov momentum)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    p.add_argument(
        "--weight-decay", type=float, help="weight decay, not applied to norms/biases (default 5e-4)"
    )
    p.add_argument(
        "--warmup-epochs", type=float, help="linear warm-up epochs before cosine decay (default 0)"
    )
    p.add_argument("--label-smoothing", type=float, help="label smoothing for cross-entropy (default 0)")
    p.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value (default off)")
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False, help="no crop/flip")
    p.add_argument("--amp", choices=["auto", "on", "off"], help="mixed precision (auto: on for CUDA only)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument(
        "--cache-dir", help="where decoded images are cached (default $NETDIET_CACHE_DIR or ~/.cache/netdiet)"
    )
    p.add_argument("--image-size", type=int, help="images: side length for digits/imagefolder (default 32)")
    p.add_argument("--max-len", type=int, help="text: maximum tokens per example (default 128)")
    p.add_argument("--vocab-size", type=int, help="text: WordPiece vocabulary size to train (default 8192)")
    p.add_argument(
        "--model-opt",
        action="append",
        metavar="KEY=VALUE",
        help="override a field of the model config, e.g. --model-opt depth=2 (repeatable; VALUE is JSON or text)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice). On a shared machine 1 avoids OpenMP stalls",
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_const", const=False, help="no progress bar"
    )
    p.set_defaults(handler=run)


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise NetdietError(f"cannot read config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise NetdietError(f"{path}: top level of the config must be a mapping of option names")
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(out) - set(DEFAULTS))
    if unknown:
        raise NetdietError(f"{path}: unknown option(s) {unknown}; valid: {sorted(DEFAULTS)}")
    return out


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge defaults, run.json (resume), YAML and explicit options, in that order."""
    settings = dict(DEFAULTS)
    run_json = Path(args.out) / "run.json"
    if args.resume and run_json.is_file():
        settings.update(json.loads(run_json.read_text())["settings"])
    if args.config:
        settings.update(_load_yaml(args.config))
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if settings["amp"] in ("on", "off"):
        settings["amp"] = settings["amp"] == "on"
    for key in ("model", "data"):
        if not settings[key]:
            raise NetdietError(f"--{key} is required (on the command line or in --config)")
    return settings


def _parse_model_opts(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise NetdietError(f"--model-opt {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def run(args: argparse.Namespace) -> int:
    s = resolve_settings(args)
    out = Path(args.out)
    if s["threads"] is not None:
        if s["threads"] <= 0:
            raise NetdietError(f"--threads must be > 0, got {s['threads']}")
        torch.set_num_threads(s["threads"])
    ctx = init_distributed(s["device"])
    try:
        return _train(s, out, args.resume, ctx)
    finally:
        shutdown_distributed(ctx)


def _data_spec(s: dict[str, Any]) -> DataSpec:
    return DataSpec(
        s["data"],
        data_dir=s["data_dir"],
        batch_size=s["batch_size"],
        eval_batch_size=s["eval_batch_size"],
        val_size=s["val_size"],
        subset=s["subset"],
        augment=s["augment"],
        seed=s["seed"],
        cache_dir=s["cache_dir"],
        image_size=s["image_size"],
        max_len=s["max_len"],
        vocab_size=s["vocab_size"],
    )


def _train_config(s: dict[str, Any]) -> TrainConfig:
    return TrainConfig(
        epochs=s["epochs"],
        optimizer=s["optimizer"],
        lr=s["lr"],
        momentum=s["momentum"],
        weight_decay=s["weight_decay"],
        warmup_epochs=s["warmup_epochs"],
        label_smoothing=s["label_smoothing"],
        grad_clip=s["grad_clip"],
        amp=s["amp"],
        device=s["device"],
        seed=s["seed"],
        progress=s["progress"] and sys.stderr.isatty(),
    )


def _train(s: dict[str, Any], out: Path, resume: bool, ctx: Any) -> int:
    started = time.time()
    if s["model"] not in zoo.names():
        raise NetdietError(f"unknown --model {s['model']!r}; zoo models: {', '.join(zoo.names())}")
    entry = zoo.entry(s["model"])
    try:
        spec = _data_spec(s)
    except ValueError as exc:
        raise NetdietError(str(exc)) from None
    if spec.input_kind != entry.input_kind:
        raise NetdietError(
            f"model {s['model']!r} takes {entry.input_kind} inputs but {s['data']!r} is {spec.input_kind} data"
        )
    try:
        cfg = _train_config(s)
    except ValueError as exc:
        raise NetdietError(str(exc)) from None
    if out.exists() and any(out.iterdir()) and not resume and (out / "run.json").exists():
        raise NetdietError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_path = out / "tokenizer.json" if spec.input_kind == "tokens" else None
    # rank 0 trains the tokenizer first so the other ranks load the same one
    if ctx.enabled and not ctx.is_main:
        torch.distributed.barrier()
    bundle = build_data(spec, rank=ctx.rank, world_size=ctx.world_size, tokenizer_path=tokenizer_path)
    if ctx.enabled and ctx.is_main:
        torch.distributed.barrier()

    overrides = _parse_model_opts(s["model_opt"])
    overrides.setdefault("num_classes", bundle.num_classes)
    if spec.input_kind == "tokens":
        overrides.setdefault("vocab_size", bundle.info["vocab_size"])
        overrides.setdefault("max_len", spec.max_len)
    torch.manual_seed(s["seed"])
    model = zoo.build(s["model"], **overrides)
    if ctx.is_main:
        atomic_write_json(
            out / "run.json", {"settings": s, "data": spec.to_json(), "train_config": cfg.to_json()}
        )
    result = fit_inplace(model, bundle.train, bundle.eval, cfg, run_dir=out, resume=resume, ctx=ctx)
    metrics = {}
    for split, loader in bundle.eval.items():
        metrics[split] = evaluate(model, loader, device=ctx.device, ctx=ctx)
    if ctx.is_main:
        meta = {
            "input_kind": entry.input_kind,
            "data": spec.to_json(),
            "data_info": {k: v for k, v in bundle.info.items() if k != "tokenizer"},
            "tokenizer": "tokenizer.json" if tokenizer_path else None,
            "train_config": cfg.to_json(),
            "metrics": metrics,
            "epochs_trained": len(result.history),
            "wall_time_s": time.time() - started,
            "world_size": ctx.world_size,
            "torch": torch.__version__,
            "machine": platform.platform(),
        }
        save_model(out, model.cpu(), s["model"], meta)
        summary = "  ".join(f"{k}_acc {v['accuracy']:.4f}" for k, v in metrics.items())
        print(f"netdiet train: wrote {out / 'model.safetensors'}  {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run only this sub-command (`python -m netdiet.cli.train ...`), e.g. under torchrun in tests."""
    parser = argparse.ArgumentParser(prog="netdiet")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args) or 0)
    except NetdietError as exc:
        print(f"netdiet train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
