"""Train one dense baseline with a named profile and record it in results.json and RESULTS.md.

    python benchmarks/baselines/run_baseline.py resnet20 --profile cpu-quick

Runs `netdiet train --config profiles/<name>-<profile>.yaml --data-dir ../shared/data --out RUN_DIR`,
times it, copies the dense checkpoint (model.safetensors + model.json [+ tokenizer.json] + metrics.jsonl)
to checkpoints/<name>-<profile>/ so every compression benchmark starts from the same model, and
appends the accuracy, wall time, machine and commit to the table. Test accuracy is the final model's
(no selection on test; per-epoch validation uses examples held out of train).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAMES = ("resnet20", "resnet56", "bert-sst2", "mobilenetv2")
TRAINING_CODE = (
    "src/netdiet/zoo",
    "src/netdiet/data",
    "src/netdiet/train",
    "src/netdiet/cli/train.py",
    "benchmarks/baselines/profiles",
)
REPORTED_SPLIT = {"resnet20": "test", "resnet56": "test", "bert-sst2": "dev", "mobilenetv2": "test"}


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        # only the code a dense training run executes counts; the compression engine may be mid-edit
        paths = [*TRAINING_CODE]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", *paths], cwd=REPO, capture_output=True, text=True
        ).stdout
        return sha.strip()[:12] + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def regenerate() -> None:
    """Rewrite RESULTS.md from results.json and throughput.json (`--table-only`)."""
    results_path = HERE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"baselines": []}
    write_markdown(results, HERE / "RESULTS.md")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=NAMES, nargs="?")
    p.add_argument("--table-only", action="store_true", help="only regenerate RESULTS.md")
    p.add_argument("--profile", choices=["cpu-quick", "full"], default="cpu-quick")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--runs", default=str(REPO / "runs" / "baselines"), help="where run directories go")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    if args.table_only:
        regenerate()
        return 0
    if args.name is None:
        p.error("name is required unless --table-only")

    key = f"{args.name}-{args.profile}"
    config = HERE / "profiles" / f"{key}.yaml"
    out = Path(args.runs) / key
    cmd = [
        sys.executable,
        "-m",
        "netdiet.cli.train",
        "--config",
        str(config.relative_to(REPO)),
        "--data-dir",
        os.path.relpath(args.data_dir, REPO),
        "--out",
        os.path.relpath(out, REPO),
        "--no-progress",
    ]
    if args.resume:
        cmd.append("--resume")
    shown = "netdiet train " + " ".join(shlex.quote(c) for c in cmd[3:])
    print(shown, flush=True)
    commit = git_commit()  # the code that trains, recorded before it runs
    t0 = time.time()
    subprocess.run(cmd, cwd=REPO, check=True)
    wall = time.time() - t0

    meta = json.loads((out / "model.json").read_text())
    dest = HERE / "checkpoints" / key
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("model.safetensors", "model.json", "tokenizer.json", "metrics.jsonl", "run.json"):
        if (out / f).is_file():
            shutil.copy2(out / f, dest / f)
    split = REPORTED_SPLIT[args.name]
    row = {
        "name": args.name,
        "profile": args.profile,
        "model": meta["model"],
        "data": meta["data"]["name"],
        "reported_split": split,
        "accuracy": meta["metrics"][split]["accuracy"],
        "val_accuracy": meta["metrics"].get("val", {}).get("accuracy"),
        "other_splits": {k: v["accuracy"] for k, v in meta["metrics"].items()},
        "num_train": meta["data_info"].get("num_train"),
        "epochs": meta["epochs_trained"],
        "wall_time_s": round(wall, 1),
        "machine": machine(),
        "commit": commit,
        "command": shown,
        "checkpoint": str(dest.relative_to(REPO)),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    results_path = HERE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"baselines": []}
    results["baselines"] = [
        r for r in results["baselines"] if (r["name"], r["profile"]) != (args.name, args.profile)
    ]
    results["baselines"].append(row)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, HERE / "RESULTS.md")
    print(json.dumps(row, indent=2))
    return 0


def write_markdown(results: dict, path: Path) -> None:
    """Regenerate RESULTS.md from results.json (the table is never edited by hand)."""
    lines = [
        "# Dense baselines",
        "",
        "Generated by `benchmarks/baselines/run_baseline.py` from `results.json`. Accuracy is the final model's",
        "on the reported split (CIFAR-10 test from the JPEG copy in ../shared/data; SST-2 dev); `val` is the part",
        "held out of the training split, the only split used while training. Wall time includes data loading",
        "and evaluation. cpu-quick runs share 2 CPU cores with other work (`nice -n 10`, 1 torch thread).",
        "The full profiles (`profiles/*-full.yaml`: 45k images, 200 epochs for the ResNets) are meant for a GPU",
        "and have not been run yet: no GPU was available. Their targets: ResNet-20 >= 91%, ResNet-56 >= 92.5%",
        "(CIFAR-10 test), the BERT-style model >= 80% (SST-2 dev).",
        "",
        "| model | data | profile | train examples | epochs | accuracy (split) | val acc | wall time | machine | commit | checkpoint |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["baselines"]:
        val = f"{r['val_accuracy']:.4f}" if r.get("val_accuracy") is not None else "-"
        lines.append(
            f"| {r['model']} | {r['data']} | {r['profile']} | {r['num_train']} | {r['epochs']} | "
            f"{r['accuracy']:.4f} ({r['reported_split']}) | {val} | {r['wall_time_s'] / 60:.1f} min | "
            f"{r['machine']} | {r['commit']} | `{r['checkpoint']}` |"
        )
    lines += ["", "Commands:", ""]
    for r in results["baselines"]:
        lines.append(f"- {r['model']} {r['profile']}: `{r['command']}`")
    tp_path = path.parent / "throughput.json"
    if tp_path.is_file():
        tp = json.loads(tp_path.read_text())
        med = tp["images_per_s_median"]
        lines += [
            "",
            "## Trainer throughput against a bare loop",
            "",
            f"`python benchmarks/baselines/bench_trainer_throughput.py` ({tp['model']}, batch {tp['batch_size']}, "
            f"{tp['threads']} thread(s), {tp['steps_per_measurement']} steps per measurement, {tp['repeats']} "
            "alternated repeats in one process; medians; ratio = median of per-repeat ratios). The machine was "
            "shared, so single samples vary by 2x; see throughput.json for every sample.",
            "",
            "| loop | images/s (median) | ratio to bare |",
            "|---|---|---|",
            f"| bare hand-written loop | {med['bare']:.0f} | 1.00 |",
            f"| netdiet trainer, no augmentation | {med['trainer']:.0f} | {tp['trainer_over_bare']:.2f} |",
            f"| netdiet trainer, crop + flip | {med['trainer+augment']:.0f} | {tp['trainer_augment_over_bare']:.2f} |",
        ]
        if "bare-nchw-contiguous" in med:
            lines.append(
                f"| bare loop, NCHW-contiguous input | {med['bare-nchw-contiguous']:.0f} | "
                f"{tp.get('bare_nchw_over_bare', float('nan')):.2f} |"
            )
    lines.append("")
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
