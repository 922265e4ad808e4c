"""What l1l2 does during its gated phase, on a committed dense checkpoint (val split only, never test).

    python benchmarks/compression/dynamics.py resnet20 --budget 0.5 --subset 5000 --epochs 1 --finetune-epochs 2

Runs netdiet.compress with the method's defaults (plus any `--option key=value`), and writes
benchmarks/compression/dynamics/<name>.json: the per-step trace (relaxed cost against the scheduled
target and the budget, lambda, loss), gate snapshots, the kept widths of l1l2 next to the widths uniform
and Torch-Pruning choose on the same checkpoint, and val accuracy right after read-off and after the
fine-tune. `--plot` draws the trace and the widths (PNG next to the JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

CHECKPOINTS = {
    "resnet20": "benchmarks/baselines/checkpoints/resnet20-cpu-quick",
    "resnet56": "benchmarks/baselines/checkpoints/resnet56-cpu-quick",
    "mobilenetv2": "benchmarks/baselines/checkpoints/mobilenetv2-cpu-quick",
    "bert": "benchmarks/baselines/checkpoints/bert-sst2-cpu-quick",
}


def parse_option(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=sorted(CHECKPOINTS))
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--finetune-epochs", type=float, default=2)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--method", default="l1l2", help="another method runs one-shot with all epochs as fine-tune"
    )
    p.add_argument("--option", action="append", default=[], help="l1l2 option key=value")
    p.add_argument("--distill", type=float, default=0.5)
    p.add_argument("--name", default=None)
    p.add_argument("--no-peers", action="store_true", help="skip the uniform / Torch-Pruning widths")
    p.add_argument("--plot", action="store_true")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = p.parse_args()
    torch.set_num_threads(1)

    import netdiet
    from netdiet.data import DataSpec, build_data
    from netdiet.train import TrainConfig, evaluate, load_model

    ckpt = ROOT / CHECKPOINTS[args.model]
    dense, meta = load_model(ckpt)
    spec = dict(meta["data"])
    spec.update(data_dir=args.data_dir, subset=args.subset)
    tok = ckpt / meta["tokenizer"] if meta.get("tokenizer") else None
    data = build_data(DataSpec.from_json(spec), tokenizer_path=tok)
    example = tuple(t[:1] for t in next(iter(data.train)).inputs)
    image = data.input_kind == "image"
    lr = args.lr if args.lr is not None else (0.02 if image else 1e-4)
    cfg = TrainConfig(
        optimizer="sgd" if image else "adamw",
        lr=lr,
        weight_decay=5e-4 if image else 0.01,
        seed=args.seed,
        epochs=1,
        progress=False,
        tensorboard=False,
    )
    data.train.seed = 1_000 + args.seed  # type: ignore[attr-defined]
    options = dict(parse_option(o) for o in args.option)
    t0 = time.perf_counter()
    # read-off accuracy: compress with no fine-tune, then fine-tune separately so both are seen
    trains = args.method == "l1l2"
    finetune_epochs = args.finetune_epochs if trains else args.epochs + args.finetune_epochs
    res = netdiet.compress(
        dense,
        data.train,
        netdiet.Budget(flops=args.budget),
        method=args.method,
        epochs=args.epochs if trains else 0,
        finetune_epochs=0,
        train_config=cfg,
        example_inputs=example,
        method_options=options,
        distill=args.distill,
        latency_batches=(),
        progress=False,
    )
    after_readoff = evaluate(res.model, data.eval["val"])["accuracy"]
    from netdiet.compress import frozen_copy
    from netdiet.train import fit_inplace

    slim = res.model
    if finetune_epochs:
        from dataclasses import replace

        fit_inplace(
            slim,
            data.train,
            {},
            replace(cfg, epochs=finetune_epochs, kd_alpha=args.distill),
            teacher=frozen_copy(dense) if args.distill > 0 else None,
        )
    after_ft = evaluate(slim, data.eval["val"])["accuracy"]
    out: dict[str, Any] = {
        "model": args.model,
        "budget": args.budget,
        "subset": args.subset,
        "epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
        "lr": lr,
        "seed": args.seed,
        "method": args.method,
        "options": options,
        "distill": args.distill,
        "val_dense": evaluate(dense, data.eval["val"])["accuracy"],
        "val_after_readoff": after_readoff,
        "val_after_finetune": after_ft,
        "flops_ratio": res.report["compressed"]["flops"] / res.report["dense"]["flops"],
        "dynamics": res.report["dynamics"],
        "kept": {args.method: res.report["kept"]},
        "sizes": res.report["sizes"],
        "trace": res.trace,
        "snapshots": res.snapshots,
        "wall_s": time.perf_counter() - t0,
    }
    if not args.no_peers:
        out["kept"].update(peer_widths(dense, example, args.budget, res.report["sizes"]))
    name = (
        args.name
        or f"{args.method}-{args.model}-{args.budget}-{args.subset}x{args.epochs}+{args.finetune_epochs}-s{args.seed}"
    )
    folder = HERE / "dynamics"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)
    summary = {k: v for k, v in out.items() if k not in ("trace", "snapshots", "kept", "sizes")}
    print(json.dumps(summary))
    if args.plot:
        plot(out, folder / f"{name}.png")


def peer_widths(dense: torch.nn.Module, example: Any, budget: float, sizes: dict[str, int]) -> dict[str, Any]:
    """Kept width per group that uniform and Torch-Pruning choose at the same budget (no training)."""
    import netdiet

    space = netdiet.analyze(dense, example)
    comp = netdiet.Compressor(dense, example, netdiet.Budget(flops=budget), "uniform", space=space)
    out: dict[str, Any] = {"uniform": {k: int(v.numel()) for k, v in comp.method.read_off().keep.items()}}
    if len(example) == 1 and example[0].dim() == 4:
        from run_compression import torch_pruning_prune

        tp = torch_pruning_prune(dense, example[0], budget * netdiet.measured_flops(dense, example))
        # Torch-Pruning's model, read back as widths of netdiet's groups: the conv/linear producing each
        out["torch-pruning"] = widths_of(space, tp)
    return out


def widths_of(space: Any, model: torch.nn.Module) -> dict[str, int]:
    params = dict(model.named_parameters())
    widths = {}
    for g in space.groups:
        for m in g.members:
            if space.analysis.roles.get((m.param, m.dim)) == "out" and m.param in params:
                widths[g.name] = int(params[m.param].shape[m.dim])
                break
    return widths


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trace = out["trace"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [t["step"] for t in trace]
    axes[0].plot(steps, [t["cost_ratio"] for t in trace], label="relaxed cost / dense")
    axes[0].plot(steps, [t["target_ratio"] for t in trace], "--", label="scheduled target")
    axes[0].axhline(out["budget"], color="k", lw=0.8, label="budget")
    axes[0].set_xlabel("gated step")
    axes[0].legend()
    ax2 = axes[1]
    ax2.plot(steps, [t["lam"] for t in trace], color="C2", label="lambda")
    ax2.set_xlabel("gated step")
    if any("loss" in t for t in trace):
        ax3 = ax2.twinx()
        ax3.plot(steps, [t.get("task_loss", float("nan")) for t in trace], color="C3", alpha=0.5)
        ax3.set_ylabel("task loss (red)")
    ax2.set_ylabel("lambda (green)")
    names = list(out["sizes"])
    xs = range(len(names))
    width = 0.8 / max(1, len(out["kept"]))
    for i, (method, kept) in enumerate(out["kept"].items()):
        axes[2].bar(
            [x + i * width for x in xs],
            [kept.get(n, 0) / out["sizes"][n] for n in names],
            width,
            label=method,
        )
    axes[2].set_xticks(list(xs))
    axes[2].set_xticklabels(names, rotation=80, fontsize=6)
    axes[2].set_ylabel("kept fraction")
    axes[2].legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
