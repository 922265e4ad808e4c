"""Why l1l2 loses on MobileNetV2: its learned allocation, fine-tuned as long as uniform's, against uniform.

    python benchmarks/compression/dynamics/mbv2_allocation.py OUT.json [--model mobilenetv2] [--budget 0.5]

Same checkpoint, data (5k CIFAR-10 images), seed and fine-tune settings as the cpu-quick benchmark.
Variants: `l1l2-3ft`, `uniform-2ft`, `l1l2@3-3ft` (3 gated epochs), `l1l2+importance="magnitude"-3ft`
(method options). Runs (val split only): (a) l1l2's gated epoch, then its setting on the dense weights (rewind) fine-tuned
for all 3 epochs, i.e. the allocation and unit choice at uniform's fine-tune budget; (b) uniform, 3 epochs.
Writes kept fractions per group for both, so the allocation can be read off.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import torch

import netdiet
from netdiet.compress import frozen_copy
from netdiet.data import DataSpec, build_data
from netdiet.train import TrainConfig, evaluate, fit_inplace, load_model

ROOT = Path(__file__).resolve().parents[3]
CKPT = {
    "mobilenetv2": "mobilenetv2-cpu-quick",
    "resnet20": "resnet20-cpu-quick",
    "resnet56": "resnet56-cpu-quick",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--variants", default="l1l2-3ft,uniform-3ft")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dense, meta = load_model(ROOT / "benchmarks/baselines/checkpoints" / CKPT[args.model])
    spec = dict(meta["data"])
    spec.update(data_dir=args.data_dir, subset=5000)
    data = build_data(DataSpec.from_json(spec))
    example = tuple(t[:1] for t in next(iter(data.train)).inputs)

    def cfg(epochs: float, kd: float = 0.5) -> TrainConfig:
        return TrainConfig(
            optimizer="sgd", lr=0.02, weight_decay=5e-4, seed=args.seed, epochs=epochs, kd_alpha=kd,
            progress=False, tensorboard=False, log_epochs=False,
        )  # fmt: skip

    out: dict = {"model": args.model, "budget": args.budget, "seed": args.seed, "runs": {}}
    path = Path(args.out)
    if path.is_file():
        out = json.loads(path.read_text())
    for variant in args.variants.split(","):
        if variant in out["runs"]:
            continue
        torch.manual_seed(args.seed)
        data.train.seed = 1_000 + args.seed  # type: ignore[attr-defined]
        method, _, ft = variant.partition("-")
        method, _, gated = method.partition("@")  # l1l2@3-3ft: 3 gated epochs, then 3 fine-tune epochs
        options = {}
        if method.startswith("l1l2"):
            method, _, opt = method.partition("+")
            options = dict(o.split("=") for o in opt.split(";") if o)
        t = time.perf_counter()
        small_batch = re.search(r"b(\d+)$", method)
        if small_batch:  # l1l2b32: the gated phase on batches of 32 (4x the gate steps), fine-tune at 128
            method = method[: small_batch.start()]
            small = dict(spec, batch_size=int(small_batch.group(1)))
            data32 = build_data(DataSpec.from_json(small))
            data32.train.seed = 1_000 + args.seed  # type: ignore[attr-defined]
            res = netdiet.compress(
                dense, data32.train, netdiet.Budget(flops=args.budget), method=method,
                epochs=float(gated or 1), finetune_epochs=0, train_config=cfg(1), example_inputs=example,
                latency_batches=(), progress=False,
                method_options={k: json.loads(v) for k, v in options.items()},
            )  # fmt: skip
            fit_inplace(res.model, data.train, {}, cfg(float(ft.rstrip("ft"))), teacher=frozen_copy(dense))
            record(out, variant, res, evaluate(res.model, data.eval["val"])["accuracy"], t, path)
            continue
        res = netdiet.compress(
            dense,
            data.train,
            netdiet.Budget(flops=args.budget),
            method=method,
            epochs=float(gated or 1) if method == "l1l2" else 0,
            finetune_epochs=float(ft.rstrip("ft")),
            train_config=cfg(1),
            example_inputs=example,
            latency_batches=(),
            progress=False,
            method_options={k: json.loads(v) for k, v in options.items()},
        )
        record(out, variant, res, evaluate(res.model, data.eval["val"])["accuracy"], t, path)


def record(out: dict, variant: str, res: Any, val: float, t0: float, path: Path) -> None:
    """One variant's val accuracy, FLOPs ratio and kept fraction per group, written atomically."""
    sizes, kept = res.report["sizes"], res.report["kept"]
    out["runs"][variant] = {
        "val_accuracy": val,
        "flops_ratio": res.report["compressed"]["flops"] / res.report["dense"]["flops"],
        "kept_fraction": {g: round(kept[g] / sizes[g], 3) for g in sizes if g in kept},
        "wall_s": time.perf_counter() - t0,
    }
    print(
        variant,
        json.dumps({k: v for k, v in out["runs"][variant].items() if k != "kept_fraction"}),
        flush=True,
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    main()
