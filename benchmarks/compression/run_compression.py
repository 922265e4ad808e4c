"""Compression benchmark: l1l2 against uniform, magnitude and Torch-Pruning, side by side in one run.

Every method starts from the same committed dense checkpoint, trains for the same total number of
epochs on the same data (l1l2: `compress_epochs` of gated training + `finetune_epochs` of distilled
fine-tuning; the one-shot methods: `compress_epochs + finetune_epochs` of distilled fine-tuning), and
is evaluated on the held-out val split and on the test split. Latency of every exported model is
measured at the end of the run in the same process, interleaved (PyTorch eager, CPU).

    python benchmarks/compression/run_compression.py --profile cpu-quick

writes benchmarks/compression/results-<profile>.json and RESULTS-<profile>.md. Torch-Pruning is installed
by this script when missing (pip), never a dependency of netdiet.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

PROFILES: dict[str, dict[str, Any]] = {
    "cpu-quick": {
        "models": {"resnet20": "benchmarks/baselines/checkpoints/resnet20-cpu-quick"},
        "subset": 5000,
        "compress_epochs": 1,
        "finetune_epochs": 2,
        "lr": 0.02,
        "threads": 1,
        "seeds": [0, 1, 2],
        "budgets": [0.5, 0.3],
        "methods": ["l1l2", "magnitude", "uniform", "torch-pruning"],
    },
    "smoke": {  # seconds: checks that the script runs end to end
        "models": {"resnet20": "benchmarks/baselines/checkpoints/resnet20-cpu-quick"},
        "subset": 512,
        "compress_epochs": 1,
        "finetune_epochs": 1,
        "lr": 0.02,
        "threads": 1,
        "seeds": [0],
        "budgets": [0.5],
        "methods": ["l1l2", "magnitude", "uniform", "torch-pruning"],
    },
    "full": {
        "models": {
            "resnet20": "benchmarks/baselines/checkpoints/resnet20-full",
            "resnet56": "benchmarks/baselines/checkpoints/resnet56-full",
        },
        "subset": None,
        "compress_epochs": 30,
        "finetune_epochs": 30,
        "lr": 0.02,
        "threads": None,
        "seeds": [0, 1, 2],
        "budgets": [0.5, 0.3],
        "methods": ["l1l2", "magnitude", "uniform", "torch-pruning"],
    },
}


def torch_pruning_prune(
    model: torch.nn.Module, example: torch.Tensor, target_flops: float
) -> torch.nn.Module:
    """Global group-magnitude pruning with Torch-Pruning to the largest ratio under the FLOPs target."""
    try:
        import torch_pruning as tp
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "torch-pruning", "--no-deps"], check=True
        )
        import torch_pruning as tp

    from netdiet import measured_flops

    def prune(ratio: float) -> torch.nn.Module:
        m = copy.deepcopy(model).eval()
        last = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)][-1]
        pruner = tp.pruner.MetaPruner(
            m,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            global_pruning=True,
            ignored_layers=[last],
        )
        pruner.step()
        return m

    lo, hi, best = 0.0, 0.95, None
    for _ in range(14):
        mid = (lo + hi) / 2
        m = prune(mid)
        if measured_flops(m, (example,)) <= target_flops:
            hi, best = mid, m
        else:
            lo = mid
    if best is None:
        raise RuntimeError("Torch-Pruning could not reach the FLOPs target")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="cpu-quick", choices=sorted(PROFILES))
    parser.add_argument("--seeds", type=int, nargs="*", help="override the profile's seeds")
    parser.add_argument("--budgets", type=float, nargs="*", help="override the profile's FLOPs budgets")
    parser.add_argument("--methods", nargs="*", help="override the profile's methods")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    prof = dict(PROFILES[args.profile])
    for key in ("seeds", "budgets", "methods"):
        if getattr(args, key):
            prof[key] = getattr(args, key)
    if prof["threads"]:
        torch.set_num_threads(prof["threads"])

    import netdiet
    from netdiet.data import DataSpec, build_data
    from netdiet.report import compare_latency
    from netdiet.train import TrainConfig, evaluate, fit_inplace, load_model

    t_all = time.perf_counter()
    runs: list[dict[str, Any]] = []
    models_for_latency: dict[str, torch.nn.Module] = {}
    plain: dict[str, float] = {}
    for model_name, ckpt in prof["models"].items():
        dense, meta = load_model(ROOT / ckpt)
        spec = dict(meta["data"])
        spec.update(data_dir=args.data_dir, subset=prof["subset"])
        data = build_data(DataSpec.from_json(spec))
        example = next(iter(data.train)).inputs[0][:1]
        total_epochs = prof["compress_epochs"] + prof["finetune_epochs"]
        # plain fine-tuning of the dense model for compress_epochs: the reference for l1l2's overhead
        t = time.perf_counter()
        fit_inplace(
            copy.deepcopy(dense),
            data.train,
            {},
            TrainConfig(lr=prof["lr"], epochs=prof["compress_epochs"], progress=False, tensorboard=False),
        )
        plain[model_name] = (time.perf_counter() - t) / prof["compress_epochs"]
        dense_test = evaluate(dense, data.eval["test"])["accuracy"]
        dense_flops = netdiet.measured_flops(dense, (example,))
        models_for_latency[f"{model_name}/dense"] = dense
        for budget in prof["budgets"]:
            for method in prof["methods"]:
                for seed in prof["seeds"]:
                    torch.manual_seed(seed)
                    cfg = TrainConfig(lr=prof["lr"], seed=seed, progress=False, tensorboard=False)
                    t = time.perf_counter()
                    if method == "torch-pruning":
                        slim = torch_pruning_prune(dense, example, budget * dense_flops)
                        prune_s = time.perf_counter() - t
                        fit_inplace(
                            slim,
                            data.train,
                            {},
                            TrainConfig(
                                lr=prof["lr"],
                                seed=seed,
                                epochs=total_epochs,
                                kd_alpha=0.5,
                                progress=False,
                                tensorboard=False,
                            ),
                            teacher=dense,
                        )
                        compress_train_s = 0.0
                    else:
                        epochs = prof["compress_epochs"] if method == "l1l2" else 0
                        finetune = prof["finetune_epochs"] if method == "l1l2" else total_epochs
                        res = netdiet.compress(
                            dense,
                            data.train,
                            netdiet.Budget(flops=budget),
                            method=method,
                            epochs=epochs,
                            finetune_epochs=finetune,
                            train_config=cfg,
                            example_inputs=(example,),
                            method_options={"lambda_lr": 0.2} if method == "l1l2" else None,
                            latency_batches=(),
                            progress=False,
                        )
                        slim, compress_train_s = res.model, res.report["compress_train_s"]
                        prune_s = 0.0
                    wall = time.perf_counter() - t
                    slim.eval()
                    flops = netdiet.measured_flops(slim, (example,))
                    run = {
                        "model": model_name,
                        "budget": budget,
                        "method": method,
                        "seed": seed,
                        "val_accuracy": evaluate(slim, data.eval["val"])["accuracy"],
                        "test_accuracy": evaluate(slim, data.eval["test"])["accuracy"],
                        "flops": flops,
                        "flops_ratio": flops / dense_flops,
                        "params": sum(p.numel() for p in slim.parameters()),
                        "wall_s": wall,
                        "compress_train_s": compress_train_s,
                        "prune_s": prune_s,
                        "compress_epoch_over_plain_epoch": (compress_train_s / prof["compress_epochs"])
                        / plain[model_name]
                        if method == "l1l2"
                        else None,
                        "dense_test_accuracy": dense_test,
                        "dense_flops": dense_flops,
                    }
                    print(json.dumps(run), flush=True)
                    runs.append(run)
                    models_for_latency[f"{model_name}/{budget}/{method}/{seed}"] = slim
    latency: dict[str, dict[str, float]] = {}
    for batch in (1, 64):
        x = example.expand(batch, *example.shape[1:]).contiguous()
        lat = compare_latency(models_for_latency, (x,), rounds=3, repeats=15 if batch == 1 else 5)
        for key, value in lat.items():
            latency.setdefault(key, {})[f"b{batch}"] = value.median_ms
    for run in runs:
        key = f"{run['model']}/{run['budget']}/{run['method']}/{run['seed']}"
        run["latency_ms_b1"], run["latency_ms_b64"] = latency[key]["b1"], latency[key]["b64"]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    machine = f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    result = {
        "profile": args.profile,
        "settings": prof,
        "commit": commit,
        "machine": machine,
        "wall_time_s": time.perf_counter() - t_all,
        "plain_epoch_s": plain,
        "dense_latency_ms": {k.split("/")[0]: v for k, v in latency.items() if k.endswith("/dense")},
        "runs": runs,
    }
    out_json = HERE / f"results-{args.profile}.json"
    tmp = out_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out_json)
    (HERE / f"RESULTS-{args.profile}.md").write_text(render(result))
    print(render(result))


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"# Compression benchmark ({result['profile']})",
        "",
        f"`python benchmarks/compression/run_compression.py --profile {result['profile']}` at commit {result['commit']} "
        f"on {result['machine']}; wall time {result['wall_time_s'] / 60:.1f} min. Every method starts from the same "
        f"dense checkpoint and trains {s['compress_epochs'] + s['finetune_epochs']} epochs in total on "
        f"{s['subset'] or 'all'} training images (l1l2: {s['compress_epochs']} gated + {s['finetune_epochs']} fine-tune; "
        "others: all fine-tune), distillation from the dense model. Accuracy: CIFAR-10 test split, mean +- std over "
        f"seeds {s['seeds']}. FLOPs: exact, per image, multiply-add = 2. Latency: PyTorch eager CPU, median, "
        "all models interleaved in one process at the end of the run.",
        "",
        "| model | FLOPs budget | method | test acc (%) | FLOPs ratio | MFLOPs | params (K) | latency b1 (ms) | latency b64 (ms) | wall (s) | gated epoch / plain epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = result["runs"]
    for model in sorted({r["model"] for r in runs}):
        first = next(r for r in runs if r["model"] == model)
        dl = result["dense_latency_ms"].get(model, {})
        lines.append(
            f"| {model} | dense | - | {100 * first['dense_test_accuracy']:.2f} | 1.000 | {first['dense_flops'] / 1e6:.2f} | - "
            f"| {dl.get('b1', float('nan')):.2f} | {dl.get('b64', float('nan')):.1f} | - | - |"
        )
        for budget in sorted({r["budget"] for r in runs}, reverse=True):
            for method in dict.fromkeys(r["method"] for r in runs):
                group = [
                    r for r in runs if r["model"] == model and r["budget"] == budget and r["method"] == method
                ]
                if not group:
                    continue
                accs = [100 * r["test_accuracy"] for r in group]
                sd = statistics.stdev(accs) if len(accs) > 1 else 0.0

                def med(k: str, group: list[dict[str, Any]] = group) -> float:
                    return statistics.median(r[k] for r in group)

                ratio = [
                    r["compress_epoch_over_plain_epoch"]
                    for r in group
                    if r["compress_epoch_over_plain_epoch"]
                ]
                lines.append(
                    f"| {model} | {budget} | {method} | {statistics.mean(accs):.2f} +- {sd:.2f} | {med('flops_ratio'):.3f} "
                    f"| {med('flops') / 1e6:.2f} | {med('params') / 1e3:.1f} | {med('latency_ms_b1'):.2f} | {med('latency_ms_b64'):.1f} "
                    f"| {med('wall_s'):.0f} | {f'{statistics.median(ratio):.2f}' if ratio else '-'} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
