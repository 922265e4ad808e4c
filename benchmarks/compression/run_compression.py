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

IMAGE_METHODS = ["l1l2", "magnitude", "uniform", "torch-pruning", "torch-pruning-groupnorm"]
TEXT_METHODS = ["l1l2", "magnitude", "uniform", "torch-pruning", "torch-pruning-groupnorm"]
SGD = {"optimizer": "sgd", "lr": 0.02, "weight_decay": 5e-4}
ADAMW = {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.01}

PROFILES: dict[str, dict[str, Any]] = {
    "cpu-quick": {
        "threads": 1,
        "seeds": [0, 1, 2],
        "models": {
            "resnet20": {
                "checkpoint": "benchmarks/baselines/checkpoints/resnet20-cpu-quick",
                "subset": 5000,
                "compress_epochs": 1,
                "finetune_epochs": 2,
                "budgets": [0.5, 0.3],
                "methods": IMAGE_METHODS,
                **SGD,
            },
            "resnet56": {
                "checkpoint": "benchmarks/baselines/checkpoints/resnet56-cpu-quick",
                "subset": 5000,
                "compress_epochs": 1,
                "finetune_epochs": 2,
                "budgets": [0.5, 0.3],
                "methods": IMAGE_METHODS,
                **SGD,
            },
            "mobilenetv2": {
                "checkpoint": "benchmarks/baselines/checkpoints/mobilenetv2-cpu-quick",
                "subset": 5000,
                "compress_epochs": 1,
                "finetune_epochs": 2,
                "budgets": [0.5],
                "methods": IMAGE_METHODS,
                **SGD,
            },
            "bert": {
                "checkpoint": "benchmarks/baselines/checkpoints/bert-sst2-cpu-quick",
                "subset": 10000,
                "compress_epochs": 1,
                "finetune_epochs": 2,
                "budgets": [0.5, 0.3],
                "methods": TEXT_METHODS,
                **ADAMW,
            },
        },
    },
    "cpu-long": {  # >= 10 total epochs over >= 10k examples: the regime a gated method is meant for
        "threads": 1,
        "seeds": [0, 1, 2],
        "models": {
            "resnet20": {
                "checkpoint": "benchmarks/baselines/checkpoints/resnet20-cpu-quick",
                "subset": 12000,
                "compress_epochs": 5,
                "finetune_epochs": 5,
                "l1l2_epochs": 2,
                "budgets": [0.5, 0.3],
                "methods": IMAGE_METHODS,
                **SGD,
            },
            "bert": {
                "checkpoint": "benchmarks/baselines/checkpoints/bert-sst2-cpu-quick",
                "subset": 12000,
                "compress_epochs": 5,
                "finetune_epochs": 5,
                "l1l2_epochs": 2,
                "budgets": [0.5],
                "methods": TEXT_METHODS,
                **ADAMW,
            },
        },
    },
    "smoke": {  # seconds: checks that the script runs end to end
        "threads": 1,
        "seeds": [0],
        "models": {
            "resnet20": {
                "checkpoint": "benchmarks/baselines/checkpoints/resnet20-cpu-quick",
                "subset": 512,
                "compress_epochs": 1,
                "finetune_epochs": 1,
                "budgets": [0.5],
                "methods": IMAGE_METHODS,
                **SGD,
            },
            "bert": {
                "checkpoint": "benchmarks/baselines/checkpoints/bert-sst2-cpu-quick",
                "subset": 512,
                "compress_epochs": 1,
                "finetune_epochs": 1,
                "budgets": [0.5],
                "methods": TEXT_METHODS,
                **ADAMW,
            },
        },
    },
    "full": {  # for a GPU: full training sets, 30 + 30 epochs
        "threads": None,
        "seeds": [0, 1, 2],
        "models": {
            "resnet20": {
                "checkpoint": "benchmarks/baselines/checkpoints/resnet20-full",
                "subset": None,
                "compress_epochs": 30,
                "finetune_epochs": 30,
                "budgets": [0.5, 0.3],
                "methods": IMAGE_METHODS,
                **SGD,
            },
            "resnet56": {
                "checkpoint": "benchmarks/baselines/checkpoints/resnet56-full",
                "subset": None,
                "compress_epochs": 30,
                "finetune_epochs": 30,
                "budgets": [0.5, 0.3],
                "methods": IMAGE_METHODS,
                **SGD,
            },
            "bert": {
                "checkpoint": "benchmarks/baselines/checkpoints/bert-sst2-full",
                "subset": None,
                "compress_epochs": 3,
                "finetune_epochs": 3,
                "budgets": [0.5],
                "methods": TEXT_METHODS,
                **ADAMW,
            },
        },
    },
}


def _attention_heads(model: torch.nn.Module) -> dict[torch.nn.Module, int]:
    """Torch-Pruning's `num_heads` map for attention modules with separate q/k/v Linears (the zoo's
    BERT): it lets Torch-Pruning remove whole heads, its documented recipe for transformers, instead
    of cutting channels across head boundaries."""
    heads: dict[torch.nn.Module, int] = {}
    for mod in model.modules():
        qkv = [getattr(mod, n, None) for n in ("query", "key", "value")]
        if hasattr(mod, "num_heads") and all(isinstance(x, torch.nn.Linear) for x in qkv):
            heads.update({x: int(mod.num_heads) for x in qkv})  # type: ignore[misc]
    return heads


def _tp_kwargs(model: torch.nn.Module, ratio: float | None = None) -> dict[str, Any]:
    last = [mod for mod in model.modules() if isinstance(mod, torch.nn.Linear)][-1]
    kwargs: dict[str, Any] = {"global_pruning": True, "ignored_layers": [last]}
    heads = _attention_heads(model)
    if heads:
        kwargs.update(num_heads=heads, prune_num_heads=True, prune_head_dims=False)
        if ratio is not None:
            kwargs["head_pruning_ratio"] = ratio
    return kwargs


def _sync_head_counts(model: torch.nn.Module) -> None:
    """Torch-Pruning slices the Linears; the attention module's own head count must follow."""
    for mod in model.modules():
        if hasattr(mod, "num_heads") and hasattr(mod, "head_dim") and hasattr(mod, "query"):
            mod.num_heads = mod.query.out_features // mod.head_dim


def torch_pruning_prune(
    model: torch.nn.Module, example: tuple[torch.Tensor, ...], target_flops: float
) -> torch.nn.Module:
    """Global group-magnitude pruning with Torch-Pruning to the largest ratio under the FLOPs target
    (attention pruned by whole heads, at the same ratio as channels)."""
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
        pruner = tp.pruner.MetaPruner(
            m,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            **_tp_kwargs(m, ratio),
        )
        pruner.step()
        _sync_head_counts(m)
        return m

    lo, hi, best = 0.0, 0.95, None
    for _ in range(14):
        mid = (lo + hi) / 2
        m = prune(mid)
        if measured_flops(m, example) <= target_flops:
            hi, best = mid, m
        else:
            lo = mid
    if best is None:
        raise RuntimeError("Torch-Pruning could not reach the FLOPs target")
    return best


class GroupNormRegulariser:
    """Torch-Pruning's GroupNormPruner recipe as a trainer step hook: its group regulariser edits the
    gradients after every backward (sparse training), so the later group-norm cut finds groups that
    training has already emptied."""

    def __init__(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...], reg: float) -> None:
        import torch_pruning as tp

        self.model = model
        self.pruner = tp.pruner.GroupNormPruner(
            model,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            reg=reg,
            **_tp_kwargs(model),
        )

    def begin(self, total_steps: int) -> None:
        pass

    def penalty(self) -> torch.Tensor:
        return torch.zeros(())

    def before_step(self) -> None:
        self.pruner.regularize(self.model)

    def after_step(self, loss: float) -> None:
        pass

    def status(self) -> dict[str, float]:
        return {}


GROUPNORM_REG = 5e-4  # Torch-Pruning's CIFAR recipe for group-norm sparse training


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="cpu-quick", choices=sorted(PROFILES))
    parser.add_argument("--models", nargs="*", help="run only these models of the profile")
    parser.add_argument("--seeds", type=int, nargs="*", help="override the profile's seeds")
    parser.add_argument("--budgets", type=float, nargs="*", help="run only these budgets")
    parser.add_argument("--methods", nargs="*", help="run only these methods")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument(
        "--part",
        help="write to results-<profile>-<model>--PART.json, so processes running at the same time never share a "
        "file (the markdown merges the parts of a model)",
    )
    parser.add_argument("--markdown-only", action="store_true", help="only re-render RESULTS-<profile>.md")
    args = parser.parse_args()
    prof = PROFILES[args.profile]
    seeds = args.seeds or prof["seeds"]
    if prof["threads"]:
        torch.set_num_threads(prof["threads"])
    for model_name, spec in prof["models"].items():
        if args.markdown_only or (args.models and model_name not in args.models):
            continue
        part = f"--{args.part}" if args.part else ""
        out_json = HERE / f"results-{args.profile}-{model_name}{part}.json"
        run_model(model_name, spec, seeds, args.data_dir, out_json, args.budgets, args.methods, args.profile)
    write_markdown(args.profile)


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def run_model(
    model_name: str,
    spec: dict[str, Any],
    seeds: list[int],
    data_dir: str,
    out_json: Path,
    budgets: list[float] | None = None,
    methods: list[str] | None = None,
    profile: str = "",
) -> None:
    """Run every (budget, method, seed) of `spec` not yet in `out_json`, saving after each run, so a
    long benchmark can be split over processes and sessions. Latency is measured at the end of each
    process for the models it trained, against the dense model timed in the same process."""
    import netdiet
    from netdiet.data import DataSpec, build_data
    from netdiet.report import compare_latency
    from netdiet.train import TrainConfig, evaluate, fit_inplace, load_model

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "src", "benchmarks/compression/run_compression.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    commit += "-dirty" if dirty else ""
    result: dict[str, Any]
    if out_json.is_file():
        result = json.loads(out_json.read_text())

        def same(a: dict[str, Any]) -> dict[str, Any]:  # budgets and methods may grow between processes
            return {k: v for k, v in a.items() if k not in ("budgets", "methods")}

        if same(result.get("settings", {})) != same(spec):
            raise SystemExit(
                f"{out_json} was made with other settings; move it away to start over ({result.get('settings')} != {spec})"
            )
        result["settings"] = spec
    else:
        result = {"model": model_name, "settings": spec, "profile": profile, "runs": [], "processes": []}
    done = {(r["budget"], r["method"], r["seed"]) for r in result["runs"]}
    todo = [
        (b, m, s)
        for b in spec["budgets"]
        for m in spec["methods"]
        for s in seeds
        if (b, m, s) not in done and (not budgets or b in budgets) and (not methods or m in methods)
    ]
    if not todo:
        return
    t_all = time.perf_counter()
    ckpt = ROOT / spec["checkpoint"]
    dense, meta = load_model(ckpt)
    data_spec = dict(meta["data"])
    data_spec.update(data_dir=data_dir, subset=spec["subset"])
    tok = ckpt / meta["tokenizer"] if meta.get("tokenizer") else None
    data = build_data(DataSpec.from_json(data_spec), tokenizer_path=tok)
    report_split = "test" if data.input_kind == "image" else "dev"
    example = tuple(t[:1] for t in next(iter(data.train)).inputs)
    total_epochs = spec["compress_epochs"] + spec["finetune_epochs"]
    # l1l2 learns its allocation in a short gated phase and fine-tunes the rest (same total epochs)
    l1l2_epochs = spec.get("l1l2_epochs", spec["compress_epochs"])

    def config(seed: int, epochs: float, kd: float = 0.0) -> TrainConfig:
        return TrainConfig(
            optimizer=spec["optimizer"],
            lr=spec["lr"],
            weight_decay=spec["weight_decay"],
            seed=seed,
            epochs=epochs,
            kd_alpha=kd,
            progress=False,
            tensorboard=False,
        )

    if "plain_epoch_s" not in result:
        # plain distilled fine-tuning of the dense model: the reference for the gated phases' overhead
        t = time.perf_counter()
        fit_inplace(copy.deepcopy(dense), data.train, {}, config(0, 1, kd=0.5), teacher=dense)
        result["plain_epoch_s"] = time.perf_counter() - t  # one epoch
    plain_epoch_s = result["plain_epoch_s"]
    dense_acc = evaluate(dense, data.eval[report_split])["accuracy"]
    dense_flops = netdiet.measured_flops(dense, example)
    process = len(result["processes"])
    models: dict[str, torch.nn.Module] = {"dense": dense}
    new_runs: list[dict[str, Any]] = []
    for budget, method, seed in todo:
        torch.manual_seed(seed)
        # the seed varies the order and augmentation of the training data (fine-tuning starts from
        # the same weights, so without this every seed would give the same run)
        data.train.seed = 1_000 + seed  # type: ignore[attr-defined]
        t = time.perf_counter()
        gated_epochs = None
        if method == "torch-pruning":
            slim = torch_pruning_prune(dense, example, budget * dense_flops)
            fit_inplace(slim, data.train, {}, config(seed, total_epochs, kd=0.5), teacher=dense)
            compress_train_s = 0.0
        elif method == "torch-pruning-groupnorm":
            t_sparse = time.perf_counter()
            sparse = copy.deepcopy(dense)
            hook = GroupNormRegulariser(sparse, example, GROUPNORM_REG)
            gated_epochs = spec["compress_epochs"]
            fit_inplace(
                sparse, data.train, {}, config(seed, gated_epochs, kd=0.5), teacher=dense, step_hook=hook
            )
            compress_train_s = time.perf_counter() - t_sparse
            slim = torch_pruning_prune(sparse.eval(), example, budget * dense_flops)
            cfg = config(seed, spec["finetune_epochs"], kd=0.5)
            fit_inplace(slim, data.train, {}, cfg, teacher=dense)
        else:
            gated_epochs = l1l2_epochs if method == "l1l2" else 0
            # l1l2 runs with its defaults: its controller has no knob to set
            res = netdiet.compress(
                dense,
                data.train,
                netdiet.Budget(flops=budget),
                method=method,
                epochs=gated_epochs,
                finetune_epochs=total_epochs - gated_epochs,
                train_config=config(seed, 1),
                example_inputs=example,
                latency_batches=(),
                progress=False,
            )
            slim, compress_train_s = res.model, res.report["compress_train_s"]
            gated_epochs = gated_epochs or None
        wall = time.perf_counter() - t
        slim.eval()
        flops = netdiet.measured_flops(slim, example)
        run = {
            "model": model_name,
            "budget": budget,
            "method": method,
            "seed": seed,
            "val_accuracy": evaluate(slim, data.eval["val"])["accuracy"],
            "test_accuracy": evaluate(slim, data.eval[report_split])["accuracy"],
            "report_split": report_split,
            "flops": flops,
            "flops_ratio": flops / dense_flops,
            "params": sum(p.numel() for p in slim.parameters()),
            "wall_s": wall,
            "compress_train_s": compress_train_s,
            "gated_epochs": gated_epochs,
            "compress_epoch_over_plain_epoch": (compress_train_s / gated_epochs) / plain_epoch_s
            if gated_epochs
            else None,
            "dense_test_accuracy": dense_acc,
            "dense_flops": dense_flops,
            "process": process,
            "commit": commit,
        }
        print(json.dumps(run), flush=True)
        result["runs"].append(run)
        new_runs.append(run)
        _write(out_json, result)
        models[f"{budget}/{method}/{seed}"] = slim
    latency: dict[str, dict[str, float]] = {}
    for batch in (1, 64):
        x = tuple(t.expand(batch, *t.shape[1:]).contiguous() for t in example)
        lat = compare_latency(models, x, rounds=3, repeats=15 if batch == 1 else 5)
        for key, value in lat.items():
            latency.setdefault(key, {})[f"b{batch}"] = value.median_ms
    for run in new_runs:
        key = f"{run['budget']}/{run['method']}/{run['seed']}"
        run["latency_ms_b1"], run["latency_ms_b64"] = latency[key]["b1"], latency[key]["b64"]
        run["dense_latency_ms"] = latency["dense"]
        for b in ("b1", "b64"):
            # measured speed-up over the FLOPs reduction: 1.0 = latency fell as much as FLOPs did
            speedup = latency["dense"][b] / latency[key][b]
            run[f"speedup_over_flops_reduction_{b}"] = speedup / (dense_flops / run["flops"])
    result["processes"].append(
        {
            "commit": commit,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
            "wall_time_s": time.perf_counter() - t_all,
            "runs": len(new_runs),
            "dense_latency_ms": latency["dense"],
        }
    )
    result["example_shape"] = [list(t.shape) for t in example]
    result["dense_latency_ms"] = latency["dense"]
    _write(out_json, result)


def write_markdown(profile: str) -> None:
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(HERE.glob(f"results-{profile}-*.json")):
        part = json.loads(path.read_text())
        into = merged.setdefault(part["model"], {**part, "runs": [], "processes": []})
        into["runs"] += part["runs"]
        into["processes"] += part["processes"]
    text = render(profile, list(merged.values()))
    (HERE / f"RESULTS-{profile}.md").write_text(text)
    print(text)


def render(profile: str, results: list[dict[str, Any]]) -> str:
    lines = [
        f"# Compression benchmark ({profile})",
        "",
        f"Made by `python benchmarks/compression/run_compression.py --profile {profile}` (one model per process with "
        "`--models NAME`; each model's JSON records its commit, machine and wall time). Every method starts from the "
        "same dense checkpoint and trains the same total number of epochs on the same training subset (l1l2: gated "
        "epochs + fine-tune epochs; the one-shot methods: all fine-tune), with distillation from the dense model. "
        "Accuracy: CIFAR-10 test split or SST-2 dev, mean +- std over seeds. FLOPs: exact, per example "
        "(multiply-add = 2). Latency: PyTorch eager, CPU, median; all of a model's exports measured interleaved in one "
        "process at the end of its run. `train/plain epoch`: wall time of one l1l2 gated epoch (or one "
        "group-norm sparse-training epoch) over one plain distilled fine-tuning epoch on the same data. "
        "`speed-up / FLOPs reduction`: measured dense/slim latency divided by dense/slim FLOPs (1.0 = latency "
        "fell as much as FLOPs). `torch-pruning`: Torch-Pruning's global group-magnitude pruning, one shot; "
        "`torch-pruning-groupnorm`: its GroupNormPruner recipe (group-norm sparse training with reg "
        f"{GROUPNORM_REG:g} for the gated epochs, then the group-magnitude cut, then fine-tuning).",
        "",
    ]
    for res in results:
        s = res["settings"]
        lines += [
            f"## {res['model']}",
            "",
            f"Commits {', '.join(sorted({p['commit'] for p in res['processes']}))}; "
            f"{res['processes'][0]['machine'] if res['processes'] else '?'}; "
            f"{len(res['processes'])} process(es), wall time {sum(p['wall_time_s'] for p in res['processes']) / 60:.1f} min; "
            f"{s['subset'] or 'all'} training examples, {s['compress_epochs'] + s['finetune_epochs']} epochs per run "
            f"(l1l2: {s.get('l1l2_epochs', s['compress_epochs'])} gated + the rest fine-tuning; torch-pruning-groupnorm: "
            f"{s['compress_epochs']} sparse + {s['finetune_epochs']}); "
            f"{s['optimizer']} lr {s['lr']}, seeds {sorted({r['seed'] for r in res['runs']})}; example input {res.get('example_shape')}.",
            "",
            "| FLOPs budget | method | accuracy (%) | val acc. (%) | FLOPs ratio | MFLOPs | params (K) | latency b1 (ms) | latency b64 (ms) | speed-up / FLOPs reduction b1, b64 | wall (s) | train/plain epoch |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        runs = [r for r in res["runs"] if "latency_ms_b1" in r]
        if not runs:
            continue
        first = runs[0]
        dl = res["dense_latency_ms"]
        lines.append(
            f"| dense | - | {100 * first['dense_test_accuracy']:.2f} | - | 1.000 | {first['dense_flops'] / 1e6:.2f} | - "
            f"| {dl['b1']:.2f} | {dl['b64']:.1f} | - | - | - |"
        )
        for budget in sorted({r["budget"] for r in runs}, reverse=True):
            for method in dict.fromkeys(r["method"] for r in runs):
                group = [r for r in runs if r["budget"] == budget and r["method"] == method]
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
                vals = [100 * r["val_accuracy"] for r in group]
                vsd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                su = (
                    f"{med('speedup_over_flops_reduction_b1'):.2f}, {med('speedup_over_flops_reduction_b64'):.2f}"
                    if "speedup_over_flops_reduction_b1" in group[0]
                    else "-"
                )
                lines.append(
                    f"| {budget} | {method} | {statistics.mean(accs):.2f} +- {sd:.2f} | {statistics.mean(vals):.2f} +- {vsd:.2f} "
                    f"| {med('flops_ratio'):.3f} "
                    f"| {med('flops') / 1e6:.2f} | {med('params') / 1e3:.1f} | {med('latency_ms_b1'):.2f} | {med('latency_ms_b64'):.1f} "
                    f"| {su} | {med('wall_s'):.0f} | {f'{statistics.median(ratio):.2f}' if ratio else '-'} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
