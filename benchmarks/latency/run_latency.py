"""Latency benchmark: how well measured-latency tables predict, and what a latency budget buys.

    python benchmarks/latency/run_latency.py validate --profile cpu-quick
    python benchmarks/latency/run_latency.py compress --profile cpu-quick

`validate`: for each model and batch size, measure the ONNX Runtime CPU latency table (1 thread), fit the
per-model overhead on 10 random pruned variants, and predict 10 other (held-out) variants, each exported
for real and timed end to end. Tables go to benchmarks/latency/tables/, results to validation-<profile>.json.

`compress`: from the same dense checkpoint and with the same training budget, compress with l1l2 (a) to a
measured-latency target (`latency=<target>` at the target batch, priced by the table) and (b) to FLOPs
budgets around the FLOPs of (a), picking the FLOPs run with the smallest FLOPs whose val accuracy is at
least (a)'s (never test). Every export's ONNX Runtime latency at batch 1 and 64 is measured in the same
process, each right after the dense model as a ratio to it (5 rounds, median ratio times the dense
model's best median), and compared with the table's prediction. Results: compress-<profile>.json.
Both write RESULTS-<profile>.md.
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT / "src"))

PROFILES: dict[str, dict[str, Any]] = {
    "cpu-quick": {
        "threads": 1,
        "batches": [1, 64],
        "calibrate": 10,
        "validate": 10,
        "seeds": [0, 1],
        "target_batch": 64,
        "models": {
            "resnet20": {
                "checkpoint": "benchmarks/baselines/checkpoints/resnet20-cpu-quick",
                "subset": 5000,
                "compress_epochs": 2,
                "finetune_epochs": 2,
                "latency_target": 0.6,
                "flops_offsets": [0.0, 0.08],
                "lr": 0.02,
            },
            "mobilenetv2": {
                "checkpoint": "benchmarks/baselines/checkpoints/mobilenetv2-cpu-quick",
                "subset": 5000,
                "compress_epochs": 2,
                "finetune_epochs": 2,
                "latency_target": 0.6,
                "flops_offsets": [0.0, 0.08],
                "lr": 0.02,
            },
        },
    },
    "smoke": {
        "threads": 1,
        "batches": [1],
        "calibrate": 2,
        "validate": 2,
        "seeds": [0],
        "target_batch": 1,
        "models": {
            "resnet20": {
                "checkpoint": "benchmarks/baselines/checkpoints/resnet20-cpu-quick",
                "subset": 256,
                "compress_epochs": 1,
                "finetune_epochs": 1,
                "latency_target": 0.6,
                "flops_offsets": [0.0],
                "lr": 0.02,
            },
        },
    },
}


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> str:
    from netdiet.cost.latency.backends import cpu_name

    return f"{cpu_name()}, {platform.machine()}, torch {torch.__version__}"


def table_path(profile: str, model: str, batch: int) -> Path:
    return HERE / "tables" / profile / f"{model}-onnxruntime-b{batch}.json"


def load_dense(spec: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    from netdiet.train import load_model

    return load_model(ROOT / spec["checkpoint"])


def example_for(meta: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    from netdiet import zoo

    return tuple(t[:1] for t in zoo.example_inputs(meta["model"], **meta["model_config"]))


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# ----- validate ---------------------------------------------------------------------------------------
RECALIBRATE = [False]


def run_validate(profile: str, models: list[str] | None) -> None:
    import netdiet
    from netdiet.cost.latency import LatencyModel, LatencyTable
    from netdiet.profiling import prepare_latency_table
    from netdiet.report import validate_latency

    prof = PROFILES[profile]
    out_path = HERE / f"validation-{profile}.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {"runs": []}
    for name, spec in prof["models"].items():
        if models and name not in models:
            continue
        dense, meta = load_dense(spec)
        example = example_for(meta)
        space = netdiet.analyze(dense, example)
        for batch in prof["batches"]:
            t0 = time.perf_counter()
            path = table_path(profile, name, batch)
            if RECALIBRATE[0] and path.exists():
                stale = LatencyTable.load(path)
                stale.calibration.pop(LatencyModel(space, stale).fingerprint, None)
                stale.save(path)
            table = prepare_latency_table(
                space,
                path,
                backend="onnxruntime",
                batch=batch,
                threads=prof["threads"],
                calibrate=prof["calibrate"],
                progress=False,
            )
            t_profile = time.perf_counter() - t0
            result = validate_latency(space, table, n=prof["validate"])
            lat = LatencyModel(space, table)
            table.calibration[lat.fingerprint]["validation"] = result
            table.save(path)
            cal = table.calibration[lat.fingerprint]
            run = {
                "model": name,
                "batch": batch,
                "backend": "onnxruntime",
                "threads": prof["threads"],
                "layer_shapes": len(table.entries),
                "multiples": sorted({e.multiple for e in table.entries.values()}),
                "scale": cal["scale"],
                "unaligned_ms": cal["unaligned_ms"],
                "overhead_ms": cal["overhead_ms"],
                "dense_measured_ms": cal["dense_measured_ms"],
                "fit_median_abs_error": cal["fit_median_abs_error"],
                "median_abs_error": result["median_abs_error"],
                "max_abs_error": result["max_abs_error"],
                "median_abs_ratio_error": result["median_abs_ratio_error"],
                "max_abs_ratio_error": result["max_abs_ratio_error"],
                "dense_validation_measured_ms": result["dense_measured_ms"],
                "variants": result["variants"],
                "profile_and_calibrate_s": t_profile,
                "wall_s": time.perf_counter() - t0,
                "table": str(path.relative_to(ROOT)),
                "commit": commit(),
                "machine": machine(),
            }
            print(json.dumps({k: v for k, v in run.items() if k != "variants"}), flush=True)
            results["runs"] = [r for r in results["runs"] if (r["model"], r["batch"]) != (name, batch)] + [
                run
            ]
            write_json(out_path, results)
    write_markdown(profile)


# ----- compress ---------------------------------------------------------------------------------------
def run_compress(profile: str, models: list[str] | None) -> None:
    prof = PROFILES[profile]
    out_path = HERE / f"compress-{profile}.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {"models": {}}
    torch.set_num_threads(prof["threads"])
    for name, spec in prof["models"].items():
        if models and name not in models:
            continue
        results["models"][name] = compress_model(profile, prof, name, spec)
        write_json(out_path, results)
    write_markdown(profile)


def compress_model(profile: str, prof: dict[str, Any], name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """(a) and (b) for one model, then every export timed; see the module docstring."""
    import netdiet
    from netdiet.cost.latency import LatencyModel, LatencyTable, TimingProtocol
    from netdiet.data import DataSpec, build_data
    from netdiet.report.latency_e2e import prepare_runner, time_against_reference
    from netdiet.train import TrainConfig, evaluate

    t_all = time.perf_counter()
    dense, meta = load_dense(spec)
    example = example_for(meta)
    space = netdiet.analyze(dense, example)
    tables = {b: LatencyTable.load(table_path(profile, name, b)) for b in prof["batches"]}
    lat_models = {b: LatencyModel(space, t) for b, t in tables.items()}
    for b, m in lat_models.items():
        if not m.calibrated:
            raise SystemExit(
                f"run `validate` first: {table_path(profile, name, b)} is not calibrated for {name}"
            )
    data_spec = dict(meta["data"])
    data_spec.update(data_dir=str(ROOT.parent / "shared" / "data"), subset=spec["subset"])
    data = build_data(DataSpec.from_json(data_spec))

    def compress_one(budget: Any, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
        torch.manual_seed(seed)
        data.train.seed = 1_000 + seed  # type: ignore[attr-defined]
        cfg = TrainConfig(
            optimizer="sgd", lr=spec["lr"], weight_decay=5e-4, seed=seed, epochs=1, progress=False
        )
        t = time.perf_counter()
        res = netdiet.compress(
            dense,
            data.train,
            budget,
            method="l1l2",
            epochs=spec["compress_epochs"],
            finetune_epochs=spec["finetune_epochs"],
            train_config=cfg,
            example_inputs=example,
            method_options={"lambda_lr": 0.2, "lowrank": False},
            latency_batches=(),
            latency_table=tables[prof["target_batch"]] if budget.needs_latency else None,
            progress=False,
        )
        slim = res.model.eval()
        counts, _ = res.exported.setting.counts()
        flops = float(res.exported.cost["flops"])
        run = {
            "budget": budget.to_dict(),
            "seed": seed,
            "val_accuracy": evaluate(slim, data.eval["val"])["accuracy"],
            "test_accuracy": evaluate(slim, data.eval["test"])["accuracy"],
            "flops_ratio": flops / float(space.cost().flops),
            "params": sum(p.numel() for p in slim.parameters()),
            "kept": counts,
            "wall_s": time.perf_counter() - t,
        }
        for b, m in lat_models.items():
            run[f"predicted_ratio_b{b}"] = m.predict_keep(counts) / m.predict_keep(None)
        print(json.dumps({k: v for k, v in run.items() if k != "kept"}), flush=True)
        return slim, run

    exports: dict[str, torch.nn.Module] = {"dense": dense}
    runs: list[dict[str, Any]] = []
    for seed in prof["seeds"]:
        slim, run = compress_one(netdiet.Budget(latency=spec["latency_target"]), seed)
        run["kind"] = "latency"
        exports[f"latency/{seed}"] = slim
        runs.append(run)
    lat_flops = statistics.mean(r["flops_ratio"] for r in runs)
    for offset in spec["flops_offsets"]:
        ratio = round(min(0.99, lat_flops + offset), 4)
        for seed in prof["seeds"]:
            slim, run = compress_one(netdiet.Budget(flops=ratio), seed)
            run["kind"] = "flops"
            exports[f"flops={ratio}/{seed}"] = slim
            runs.append(run)
    # every export timed in one process, each right after the dense model, as a ratio to it
    measured: dict[str, dict[int, float]] = {}
    protocol = TimingProtocol(min_sample_ms=2.0)
    for batch in prof["batches"]:
        runners = {
            key: prepare_runner(model, example, "onnxruntime", batch=batch, threads=prof["threads"])
            for key, model in exports.items()
        }
        keys = [k for k in runners if k != "dense"]
        dense_ms, others = time_against_reference(
            runners["dense"], [runners[k] for k in keys], protocol, rounds=5
        )
        measured.setdefault("dense", {})[batch] = dense_ms
        for key, ms in zip(keys, others):
            measured.setdefault(key, {})[batch] = ms
    for run in runs:
        key = (
            f"latency/{run['seed']}"
            if run["kind"] == "latency"
            else f"flops={run['budget']['flops']}/{run['seed']}"
        )
        for b in prof["batches"]:
            run[f"measured_ms_b{b}"] = measured[key][b]
            run[f"measured_ratio_b{b}"] = measured[key][b] / measured["dense"][b]
            pred = run[f"predicted_ratio_b{b}"]
            run[f"measured_over_predicted_reduction_b{b}"] = change_quotient(
                run[f"measured_ratio_b{b}"], pred
            )
    return {
        "settings": spec,
        "seeds": prof["seeds"],
        "target_batch": prof["target_batch"],
        "dense": {
            "val_accuracy": evaluate(dense, data.eval["val"])["accuracy"],
            "test_accuracy": evaluate(dense, data.eval["test"])["accuracy"],
            **{f"measured_ms_b{b}": measured["dense"][b] for b in prof["batches"]},
        },
        "runs": runs,
        "comparison": compare(runs, prof["batches"]),
        "commit": commit(),
        "machine": machine(),
        "wall_s": time.perf_counter() - t_all,
    }


def change_quotient(measured_ratio: float, predicted_ratio: float) -> float | None:
    """Measured latency change over predicted change (1 - ratio each; both negative for a slowdown)."""
    predicted = 1 - predicted_ratio
    return (1 - measured_ratio) / predicted if abs(predicted) > 1e-9 else None


def compare(runs: list[dict[str, Any]], batches: list[int]) -> dict[str, Any]:
    """(a) the latency-targeted runs against (b) the FLOPs budget chosen on val accuracy."""

    def mean(group: list[dict[str, Any]], key: str) -> float:
        return statistics.mean(r[key] for r in group)

    lat = [r for r in runs if r["kind"] == "latency"]
    by_budget: dict[float, list[dict[str, Any]]] = {}
    for r in runs:
        if r["kind"] == "flops":
            by_budget.setdefault(r["budget"]["flops"], []).append(r)
    lat_val = mean(lat, "val_accuracy")
    ok = [b for b, g in by_budget.items() if mean(g, "val_accuracy") >= lat_val]
    chosen = min(ok) if ok else max(by_budget, key=lambda b: mean(by_budget[b], "val_accuracy"))
    flops = by_budget[chosen]
    out: dict[str, Any] = {
        "flops_budget": chosen,
        "flops_val_accuracy_at_least_latency": bool(ok),
        "latency_val_accuracy": lat_val,
        "flops_val_accuracy": mean(flops, "val_accuracy"),
        "latency_test_accuracy": mean(lat, "test_accuracy"),
        "flops_test_accuracy": mean(flops, "test_accuracy"),
    }
    for b in batches:
        out[f"latency_ms_b{b}"] = mean(lat, f"measured_ms_b{b}")
        out[f"flops_ms_b{b}"] = mean(flops, f"measured_ms_b{b}")
        out[f"speedup_of_latency_targeted_b{b}"] = out[f"flops_ms_b{b}"] / out[f"latency_ms_b{b}"] - 1
    return out


# ----- markdown ---------------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_markdown(profile: str) -> None:
    lines = [f"# Latency benchmark ({profile})", ""]
    val_path = HERE / f"validation-{profile}.json"
    if val_path.exists():
        runs = json.loads(val_path.read_text())["runs"]
        lines += [
            "## Latency model validation",
            "",
            f"`python benchmarks/latency/run_latency.py validate --profile {profile}`. ONNX Runtime CPU, 1 intra-op "
            "thread, fp32. Per model and batch: profile the layer table, fit scale/overhead on random pruned "
            "variants, then predict held-out variants (other seed), each exported to ONNX and timed end to end "
            "(median after outlier rejection), each as a ratio to the dense model timed just before it. Latency error = "
            "|predicted - measured| / measured; ratio error = the same for latency relative to the dense model measured "
            "in the same pass (what relative budgets use; immune to the machine being faster or slower than during "
            "calibration: compare the dense column of both phases).",
            "",
            "| model | batch | layer shapes | paying multiples | dense (ms), calibration / validation | fit error (median) | held-out latency error, median (max) | held-out ratio error, median (max) | wall (s) | commit | machine |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            ratio_errors = [abs(v["ratio_error"]) for v in r["variants"] if "ratio_error" in v]
            ratio = (
                f"**{100 * statistics.median(ratio_errors):.1f}%** ({100 * max(ratio_errors):.1f}%)"
                if ratio_errors
                else "-"
            )
            dense_val = r.get("dense_validation_measured_ms")
            lines.append(
                f"| {r['model']} | {r['batch']} | {r['layer_shapes']} | {r['multiples']} "
                f"| {r['dense_measured_ms']:.3f} / {f'{dense_val:.3f}' if dense_val else '-'} "
                f"| {100 * r['fit_median_abs_error']:.1f}% | **{100 * r['median_abs_error']:.1f}%** ({100 * r['max_abs_error']:.1f}%) "
                f"| {ratio} | {r['wall_s']:.0f} | {r['commit']} | {r['machine']} |"
            )
        lines.append("")
    comp_path = HERE / f"compress-{profile}.json"
    if comp_path.exists():
        data = json.loads(comp_path.read_text())["models"]
        lines += [
            "## Latency-targeted against FLOPs-targeted compression",
            "",
            f"`python benchmarks/latency/run_latency.py compress --profile {profile}`. Same dense checkpoint, same "
            "training (l1l2 without low-rank, gated epochs + distilled fine-tune epochs, SGD), seeds as listed. (a): "
            "`latency=<target>` priced by the ONNX Runtime table at the target batch. (b): FLOPs budgets at and "
            "above the FLOPs of (a); the one chosen is the smallest whose mean val accuracy is at least (a)'s. "
            "Latency: ONNX Runtime CPU, 1 thread, every export measured in one process right after the dense model, "
            "as a ratio to it (median of 5 rounds) times the dense model's best median. measured/predicted = measured latency reduction / predicted reduction (1 - ratio each; for an export slower than dense both are negative and it reads measured slowdown / predicted slowdown).",
            "",
        ]
        for name, res in data.items():
            c = res["comparison"]
            d = res["dense"]
            lines += [
                f"### {name}",
                "",
                f"Commit {res['commit']}, {res['machine']}, wall {res['wall_s'] / 60:.1f} min, seeds {res['seeds']}, "
                f"target batch {res['target_batch']}. Dense: test {100 * d['test_accuracy']:.2f}%, "
                + ", ".join(
                    f"b{k[-1] if k.endswith('1') else k.split('_b')[-1]} {v:.3f} ms"
                    for k, v in d.items()
                    if k.startswith("measured_ms")
                )
                + ".",
                "",
                "| run | budget | seed | val acc | test acc | FLOPs ratio | pred. ratio b1 | meas. ratio b1 | meas./pred. b1 | pred. ratio b64 | meas. ratio b64 | meas./pred. b64 |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in res["runs"]:
                budget = ", ".join(f"{k}={v}" for k, v in r["budget"].items())
                cells = []
                for b in (1, 64):
                    if f"predicted_ratio_b{b}" in r:
                        cells += [
                            f"{r[f'predicted_ratio_b{b}']:.3f}",
                            f"{r[f'measured_ratio_b{b}']:.3f}",
                            _fmt(change_quotient(r[f"measured_ratio_b{b}"], r[f"predicted_ratio_b{b}"])),
                        ]
                    else:
                        cells += ["-", "-", "-"]
                lines.append(
                    f"| {r['kind']} | {budget} | {r['seed']} | {100 * r['val_accuracy']:.2f} | {100 * r['test_accuracy']:.2f} "
                    f"| {r['flops_ratio']:.3f} | " + " | ".join(cells) + " |"
                )
            lines += [
                "",
                f"Chosen FLOPs budget {c['flops_budget']} (val accuracy {'>=' if c['flops_val_accuracy_at_least_latency'] else '<'} "
                f"the latency-targeted runs': {100 * c['flops_val_accuracy']:.2f}% vs {100 * c['latency_val_accuracy']:.2f}%; "
                f"test {100 * c['flops_test_accuracy']:.2f}% vs {100 * c['latency_test_accuracy']:.2f}%).",
                "",
                "| batch | latency-targeted (ms) | FLOPs-targeted (ms) | latency-targeted faster by |",
                "|---|---|---|---|",
            ]
            for b in (1, 64):
                if f"latency_ms_b{b}" in c:
                    lines.append(
                        f"| {b} | {c[f'latency_ms_b{b}']:.3f} | {c[f'flops_ms_b{b}']:.3f} | {100 * c[f'speedup_of_latency_targeted_b{b}']:.1f}% |"
                    )
            lines.append("")
    (HERE / f"RESULTS-{profile}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=["validate", "compress", "markdown"])
    parser.add_argument("--profile", default="cpu-quick", choices=sorted(PROFILES))
    parser.add_argument("--models", nargs="*", help="run only these models of the profile")
    parser.add_argument("--batches", type=int, nargs="*", help="validate: only these batch sizes")
    parser.add_argument(
        "--recalibrate", action="store_true", help="validate: drop the tables' calibration and fit it again"
    )
    args = parser.parse_args()
    if args.batches:
        PROFILES[args.profile]["batches"] = args.batches
    RECALIBRATE[0] = args.recalibrate
    torch.set_num_threads(PROFILES[args.profile]["threads"])
    if args.part == "validate":
        run_validate(args.profile, args.models)
    elif args.part == "compress":
        run_compress(args.profile, args.models)
    else:
        write_markdown(args.profile)


if __name__ == "__main__":
    main()
