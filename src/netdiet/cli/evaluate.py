"""`netdiet eval`: accuracy and loss of a trained or compressed run directory on its data splits.

The model is rebuilt from model.json + model.safetensors (a `netdiet train` run) or from recipe.json +
base.json (a `netdiet compress` run), and the data pipeline is replayed from the recorded data spec (and
tokenizer.json for text), so the numbers are comparable to training's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from netdiet.cli.model_source import load_run
from netdiet.data import DataSpec, build_data
from netdiet.errors import NetdietError
from netdiet.train import evaluate
from netdiet.train.distributed import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained or compressed run directory",
        description="Evaluate the model saved by `netdiet train` or `netdiet compress` on its data splits.",
    )
    p.add_argument(
        "--checkpoint", required=True, help="directory written by `netdiet train` or `netdiet compress`"
    )
    p.add_argument(
        "--split",
        action="append",
        help="split to evaluate: val (held out of train), test, dev, ... (repeatable; default all)",
    )
    p.add_argument("--data-dir", help="where the data is now, if it moved since training")
    p.add_argument("--batch-size", type=int, default=512, help="evaluation batch size (default 512)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise NetdietError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    run_dir = Path(args.checkpoint)
    model, meta = load_run(run_dir)
    data = dict(meta["data"])
    if args.data_dir:
        data["data_dir"] = args.data_dir
    data["eval_batch_size"] = args.batch_size
    spec = DataSpec.from_json(data)
    tok = run_dir / meta["tokenizer"] if meta.get("tokenizer") else None
    if tok is not None and not tok.is_file():
        raise NetdietError(f"{tok}: the run's tokenizer is missing; evaluation needs the training vocabulary")
    bundle = build_data(spec, tokenizer_path=tok)
    splits = args.split or list(bundle.eval)
    unknown = [s for s in splits if s not in bundle.eval]
    if unknown:
        raise NetdietError(f"unknown split(s) {unknown}; this data set has {list(bundle.eval)}")
    device = resolve_device(args.device)
    model.to(device)
    results = {s: evaluate(model, bundle.eval[s], device=device) for s in splits}
    if args.json:
        print(json.dumps({"model": meta["model"], "metrics": results}, indent=2))
    else:
        for s, m in results.items():
            print(f"{s:>8}: accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  n {m['n']}")
    return 0
