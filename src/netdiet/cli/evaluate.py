"""`netdiet eval`: accuracy and loss of a trained run directory on its data splits.

The model is rebuilt from model.json + model.safetensors and the data pipeline is replayed from the
recorded data spec (and tokenizer.json for text), so the numbers are comparable to training's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from netdiet.data import DataSpec, build_data
from netdiet.errors import NetdietError
from netdiet.train import evaluate, load_model
from netdiet.train.distributed import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained run directory",
        description="Evaluate the model saved in a `netdiet train` run directory on its data splits.",
    )
    p.add_argument("--checkpoint", required=True, help="run directory written by `netdiet train`")
    p.add_argument(
        "--split",
        action="append",
        help="split to evaluate: val (held out of train), test, dev, ... (repeatable; default all)",
    )
    p.add_argument("--data-dir", help="where the data is now, if it moved since training")
    p.add_argument("--batch-size", type=int, default=512, help="evaluation batch size (default 512)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.checkpoint)
    model, meta = load_model(run_dir)
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
