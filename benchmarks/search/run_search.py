"""Search-based methods against the one-run ones: amc, evolution (predictor and true-evaluation fitness),
knapsack, l1l2 and uniform, to FLOPs budgets and a measured-latency budget, from the same dense checkpoint.

Every row trains `EPOCHS` epochs in all on the same training subset and augmentation:

- l1l2 and knapsack (one training run): 1 epoch of their own phase (l1l2's gates; knapsack's progressive
  Taylor/knapsack pruning), then `EPOCHS - 1` epochs of fine-tuning;
- amc, evolution, evolution-eval (searches): the search, then `EPOCHS` epochs of fine-tuning. Candidates
  are scored without fine-tuning on up to 1,000 images of the validation split (held out of the training
  data; never the test split) after BatchNorm re-estimation on 4 training batches;
- uniform (no search): every group cut by the same ratio, `EPOCHS` epochs of fine-tuning.

`evolution` ranks candidates with its accuracy predictor (64 scored sub-networks); `evolution-eval` runs the
same search (population 20, 10 generations: `EVOLUTION`) with every candidate truly scored, which shows what the predictor costs in accuracy;
`evolution-eval-depth` (not in the default methods) adds every droppable residual block as a gene, so the
search trades layers against widths; `l1l2-depth` (not in the default methods either) gates the same blocks in
l1l2's gated phase (`depth=True`). Search
cost is counted the same way for every row: seconds in the method's search, of which scoring candidates,
the number of sub-networks scored, and seconds of the method's training phase and of the fine-tune.

Latency: each exported fp32 model's ONNX file is timed in ONNX Runtime CPU (1 thread) at batch 1 and 64,
interleaved with the dense file in one process. The latency budget (`latency=0.45` of dense at batch 64)
is priced on the fp32 axis of the committed latency table.

    PYTHONPATH=src python benchmarks/search/run_search.py --models resnet20 --seeds 0 --part a
    PYTHONPATH=src python benchmarks/search/run_search.py --markdown-only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "src"))

import netdiet  # noqa: E402
from netdiet.data import DataSpec, build_data  # noqa: E402
from netdiet.export.onnx import to_onnx  # noqa: E402
from netdiet.train import TrainConfig, evaluate  # noqa: E402
from netdiet.train.model_io import load_model  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "run_quantization", ROOT / "benchmarks/quantization/run_quantization.py"
)
assert _spec is not None and _spec.loader is not None
_quant = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_quant)
time_files = _quant.time_files

EPOCHS = 3
LATENCY_BATCH = 64
TABLES = ROOT / "benchmarks/quantization/tables"
MODELS: dict[str, dict[str, Any]] = {
    "resnet20": {
        "checkpoint": "benchmarks/baselines/checkpoints/resnet20-cpu-quick",
        "subset": 5000,
        "optimizer": "sgd",
        "lr": 0.02,
        "weight_decay": 5e-4,
        "table": TABLES / "resnet20-ort-b64-int8.json",
    },
    "bert": {
        "checkpoint": "benchmarks/baselines/checkpoints/bert-sst2-cpu-quick",
        "subset": 5000,
        "optimizer": "adamw",
        "lr": 1e-4,
        "weight_decay": 0.01,
        "table": None,
    },
}
BUDGETS = ("flops=0.5", "flops=0.3", "latency=0.45")
METHODS = ("l1l2", "knapsack", "amc", "evolution", "evolution-eval", "uniform")
ONE_RUN = ("l1l2", "knapsack")
# a smaller search than evolution's defaults (50 x 20 generations): with true evaluation it scores at most
# 20 + 10 x 16 = 180 sub-networks (about 6 minutes for a ResNet-20 on one thread), with the predictor 64
EVOLUTION = {"population": 20, "parents": 4, "mutations": 8, "crossovers": 8, "generations": 10}


def run_row(
    name: str,
    spec: dict[str, Any],
    data: Any,
    dense: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    method: str,
    budget: str,
    seed: int,
    work: Path,
) -> dict[str, Any]:
    cfg = TrainConfig(
        optimizer=spec["optimizer"],
        lr=spec["lr"],
        weight_decay=spec["weight_decay"],
        seed=seed,
        epochs=1,
        progress=False,
        tensorboard=False,
    )
    kwargs: dict[str, Any] = dict(
        train_config=cfg,
        example_inputs=example,
        latency_batches=(),
        progress=False,
        eval_data=data.eval["val"],
    )
    if budget.startswith("latency"):
        kwargs.update(latency_table=spec["table"], latency_batch=LATENCY_BATCH)
    options: dict[str, Any] = {}
    if method in ("amc", "evolution", "evolution-eval", "evolution-eval-depth"):
        options["seed"] = seed
    if method.startswith("evolution"):  # one search size for both fitnesses, so they compare cleanly
        options.update(EVOLUTION)
    if method.startswith("evolution-eval"):
        options["fitness"] = "evaluate"
    if method.endswith("-depth"):  # residual blocks are genes too: layers traded against widths
        options["depth"] = True
    if method.split("-")[0] in ONE_RUN:
        kwargs.update(epochs=1, finetune_epochs=EPOCHS - 1)
    else:
        kwargs.update(epochs=0, finetune_epochs=EPOCHS)
    torch.manual_seed(seed)
    t = time.perf_counter()
    result = netdiet.compress(
        dense, data.train, budget, method=method.split("-")[0], method_options=options, **kwargs
    )
    wall = time.perf_counter() - t
    report = result.report
    metric = "latency" if budget.startswith("latency") else budget.split("=")[0]
    if metric == "flops":  # the budget is a guarantee, checked here on the exported model's exact count
        assert report["compressed"]["flops"] <= float(budget.split("=")[1]) * report["dense"]["flops"] * (
            1 + 1e-9
        )
    model = result.model.eval()
    path = work / f"{method}-{budget}-{seed}.onnx"
    to_onnx(model, example, path)
    search = {k: v for k, v in report.get("search", {}).items() if k != "trace"}
    row = {
        "model": name,
        "method": method,
        "budget": budget,
        "seed": seed,
        "val_accuracy": evaluate(model, data.eval["val"])["accuracy"],
        "test_accuracy": evaluate(model, data.eval["test"])["accuracy"],
        "flops_ratio": report["compressed"]["flops"] / report["dense"]["flops"],
        "params_ratio": report["compressed"]["params"] / report["dense"]["params"],
        "search_cost": report["search_cost"],
        "search": search,
        "wall_s": wall,
        "kept": report["kept"],
        "dropped_blocks": report.get("dropped_blocks", []),
        "file": str(path),
    }
    if budget.startswith("latency"):  # which fit of the table priced the budget (see `_budget_label`)
        fits = json.loads(Path(spec["table"]).read_text()).get("calibration", {}).values()
        row["latency_fit"] = 2 if any("depth_variants" in f for f in fits) else 1
        if "latency_fixups" in report:  # compress measured the export and tightened it while over budget
            row["latency_fixups"] = report["latency_fixups"]
    if "latency" in report:
        row["latency_budget"] = {k: report["latency"][k] for k in ("predicted_ratio", "measured_ratio")}
    print(json.dumps({k: v for k, v in row.items() if k not in ("file", "kept")}), flush=True)
    return row


def run(
    name: str, seeds: list[int], methods: list[str], budgets: list[str], data_dir: str, out: Path
) -> dict[str, Any]:
    t_all = time.perf_counter()
    spec = MODELS[name]
    dense, meta = load_model(ROOT / spec["checkpoint"])
    dense.eval()
    data_spec = dict(meta["data"])
    data_spec.update(data_dir=data_dir, subset=spec["subset"])
    tok = ROOT / spec["checkpoint"] / meta["tokenizer"] if meta.get("tokenizer") else None
    data = build_data(DataSpec.from_json(data_spec), tokenizer_path=tok)
    example = tuple(t[:1] for t in next(iter(data.train)).inputs)
    work = Path(tempfile.mkdtemp(prefix=f"search-{name}-"))
    dense_path = to_onnx(dense, example, work / "dense.onnx")
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        data.train.seed = 1_000 + seed  # type: ignore[attr-defined]
        for budget in budgets:
            if budget.startswith("latency") and spec["table"] is None:
                continue
            for method in methods:
                row = run_row(name, spec, data, dense, example, method, budget, seed, work)
                for b in (1, LATENCY_BATCH):  # timed now against the dense file, interleaved
                    t = time_files({"dense": dense_path, "row": Path(row["file"])}, example, b)
                    row[f"ort_ms_b{b}"], row[f"dense_ms_b{b}"] = t["row"], t["dense"]
                    row[f"speedup_b{b}"] = t["dense"] / t["row"]
                row.pop("file")
                rows.append(row)
                write(out, summary(name, seeds, rows, dense, data, t_all, done=False))
    return summary(name, seeds, rows, dense, data, t_all, done=True)


def write(out: Path, result: dict[str, Any]) -> None:
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)


def summary(
    name: str,
    seeds: list[int],
    rows: list[dict[str, Any]],
    dense: torch.nn.Module,
    data: Any,
    t_all: float,
    done: bool,
) -> dict[str, Any]:
    return {
        "model": name,
        "seeds": seeds,
        "epochs": EPOCHS,
        "rows": rows,
        "dense": {
            "val_accuracy": evaluate(dense, data.eval["val"])["accuracy"],
            "test_accuracy": evaluate(dense, data.eval["test"])["accuracy"],
        },
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"{os.cpu_count()} cores (shared with the other benchmark process of this run)",
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "wall_s": time.perf_counter() - t_all,
        "complete": done,
    }


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def _cost_s(r: dict[str, Any]) -> float:
    """Seconds spent choosing the architecture: the search, or the one-run method's training phase."""
    c = r["search_cost"]
    return float(c["search_s"]) + float(c["train_s"])


def plot(model: str, rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    methods = sorted({r["method"] for r in rows})
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    budgets = sorted({_budget_label(r) for r in rows})
    markers = dict(zip(budgets, "osD^v"))
    largest = max(_cost_s(r) for r in rows) or 1.0
    for ax, b in zip(axes, (64, 1)):
        for r in rows:
            ax.scatter(
                r[f"ort_ms_b{b}"] / r[f"dense_ms_b{b}"],
                100 * r["test_accuracy"],
                s=20 + 400 * _cost_s(r) / largest,
                color=colors[r["method"]],
                marker=markers[_budget_label(r)],
                alpha=0.7,
                edgecolors="black",
                linewidths=0.5,
            )
        ax.set_xlabel(f"measured latency / dense (ONNX Runtime CPU, batch {b})")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in methods]
    handles += [plt.Line2D([], [], color="gray", marker=markers[b], linestyle="", label=b) for b in budgets]
    axes[0].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle(
        f"{model}: accuracy against measured latency (marker area ~ search / training-phase seconds)"
    )
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _budget_label(row: dict[str, Any]) -> str:
    """Latency budgets are labelled by the table fit that priced them: fit 1 (widths only, rows before
    commit 6efb0cb) and fit 2 (refitted on variants that drop blocks too); their rows are not pooled."""
    if not row["budget"].startswith("latency"):
        return str(row["budget"])
    fixup = " + measured fix-up" if "latency_fixups" in row else ""
    return f"{row['budget']} fit {row.get('latency_fit', 1)}{fixup}"


def render() -> str:
    lines = [
        "# Search methods against one-run methods (cpu-quick)",
        "",
        "Generated by `benchmarks/search/run_search.py` (its docstring says what every row is). Every row starts",
        f"from the same dense checkpoint and trains {EPOCHS} epochs in all on the same 5k-example subset; accuracy in %",
        "(mean +- std over seeds) on the test split; speed-up: ONNX Runtime CPU, 1 thread, fp32, against the dense",
        "file timed in the same process; search s: seconds in the method's search (of which scoring candidates);",
        "scored: sub-networks evaluated; phase s: the one-run method's training phase; FT s: the fine-tune.",
        "A results file marked cut short was stopped on purpose between rows; its missing seeds ran as another part.",
        "Rows of files with a later commit ran the same method code (later commits added options, off by default).",
        "Latency budgets are priced by the committed ResNet-20 table: `fit 1` rows by its first fit (width variants",
        "only; it mispriced settings that drop blocks by 14%), `fit 2` rows by the refit on variants that drop blocks",
        "too (benchmarks/latency/RESULTS-depth-cpu-quick.md); only rows of one fit compare. `+ measured fix-up`: compress",
        "timed each export and tightened it while it measured over the budget (`latency_fixup`, default since 2026-12-05).",
        "",
    ]
    models: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path in sorted(HERE.glob("results-*.json")):
        data = json.loads(path.read_text())
        models.setdefault(data["model"], []).append((path, data))
    for model, parts in models.items():
        by: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _, data in parts:
            for r in data["rows"]:
                by.setdefault((_budget_label(r), r["method"]), []).append(r)
        d = parts[0][1]["dense"]
        lines += [f"## {model}", ""]
        for path, data in parts:
            lines.append(
                f"- {path.name}: seeds {data['seeds']}, {len(data['rows'])} rows"
                f"{'' if data.get('complete', True) else ' (cut short)'}; {data['machine']}; torch {data['torch']}, "
                f"onnxruntime {data['onnxruntime']}; commit {data['commit']}; wall {data['wall_s'] / 60:.1f} min"
            )
        lines += [
            "",
            f"Dense: test {100 * d['test_accuracy']:.2f}%.",
            "",
            "| budget | method | seeds | test acc | val acc | FLOPs ratio | speed-up b1 | speed-up b64 | search s (scoring s) | scored | phase s | FT s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (budget, method), rows in sorted(by.items()):
            c = [r["search_cost"] for r in rows]
            lines.append(
                f"| {budget} | {method} | {len(rows)} | "
                f"{_mean_std([100 * r['test_accuracy'] for r in rows])} | "
                f"{_mean_std([100 * r['val_accuracy'] for r in rows])} | "
                f"{statistics.mean(r['flops_ratio'] for r in rows):.3f} | "
                f"{statistics.mean(r['speedup_b1'] for r in rows):.2f}x | "
                f"{statistics.mean(r['speedup_b64'] for r in rows):.2f}x | "
                f"{statistics.mean(x['search_s'] for x in c):.0f} ({statistics.mean(x['evaluation_s'] for x in c):.0f}) | "
                f"{statistics.mean(x['evaluations'] for x in c):.0f} | "
                f"{statistics.mean(x['train_s'] for x in c):.0f} | "
                f"{statistics.mean(x['finetune_s'] for x in c):.0f} |"
            )
        lat = [(k, r) for k, rows in sorted(by.items()) for r in rows if "latency_budget" in r]
        if lat:
            lines += [
                "",
                "Latency budget, the compress report's own measurement (batch 64, interleaved rounds):",
                "",
                "| budget | method | seed | predicted ratio | measured ratio |",
                "|---|---|---|---|---|",
            ]
            for (budget, method), r in lat:
                b = r["latency_budget"]
                lines.append(
                    f"| {budget} | {method} | {r['seed']} | {b['predicted_ratio']:.3f} | {b['measured_ratio']:.3f} |"
                )
        pred = [
            r
            for (_, m), rows in sorted(by.items())
            for r in rows
            if m == "evolution" and r["search"].get("predictor")
        ]
        if pred:
            lines += [
                "",
                "Accuracy predictor of `evolution` on its held-out sub-networks (RMSE of the score against a constant",
                "predictor's, Kendall's tau), and the predicted against the true score of the sub-network it chose:",
                "",
                "| budget | seed | RMSE | constant RMSE | tau | chosen: predicted | chosen: true |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in pred:
                p, s = r["search"]["predictor"], r["search"]
                lines.append(
                    f"| {r['budget']} | {r['seed']} | {p['rmse']:.4f} | {p['constant_rmse']:.4f} | {p['kendall_tau']:.2f} "
                    f"| {s['best_fitness']:.4f} | {s['best_true_score']:.4f} |"
                )
        all_rows = [r for rows in by.values() for r in rows]
        png = HERE / f"pareto-{model}.png"
        plot(model, all_rows, png)
        lines += ["", f"![pareto]({png.name})", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=["resnet20"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--budgets", nargs="*", default=list(BUDGETS))
    parser.add_argument("--part", default="a", help="suffix of the results file (one per process)")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--markdown-only", action="store_true")
    args = parser.parse_args()
    if not args.markdown_only:
        torch.set_num_threads(1)
        for name in args.models:
            out = HERE / f"results-{name}-{args.part}.json"
            write(out, run(name, args.seeds, args.methods, args.budgets, args.data_dir, out))
    md = HERE / "RESULTS.md"
    md.write_text(render())
    print(md.read_text())


if __name__ == "__main__":
    main()
