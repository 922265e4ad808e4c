"""Does the latency model price dropped residual blocks? Before and after fitting on depth variants.

The search benchmark's measured latency of settings that drop ResNet-20 blocks was 14-36% above the
prediction (0.38-0.45 predicted against 0.50-0.61 measured at latency=0.45). This script takes the
committed table (benchmarks/quantization/tables/resnet20-ort-b64-int8.json, ONNX Runtime CPU, 1 thread,
batch 64), keeps its old fit (width variants only), refits it with `calibrate_latency` (every third
variant also drops random blocks; every term of the model counts only kept blocks' layers) and runs
`validate_latency` on 12 held-out variants (4 of them drop blocks). Each variant is predicted three ways:
the old fit as the old model priced it (only the table term followed the blocks), the old fit with every
term following the blocks, and the new fit. Errors are of the latency relative to the dense model timed
in the same pass (what a relative budget uses). The refitted table is written back to its path.

    PYTHONPATH=src python benchmarks/latency/run_depth_latency.py
"""

from __future__ import annotations

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

import netdiet  # noqa: E402
from netdiet.cost.latency import LatencyModel, LatencyTable  # noqa: E402
from netdiet.report.latency_fit import calibrate_latency, random_variants, validate_latency  # noqa: E402
from netdiet.train.model_io import load_model  # noqa: E402

CHECKPOINT = ROOT / "benchmarks/baselines/checkpoints/resnet20-cpu-quick"
TABLE = ROOT / "benchmarks/quantization/tables/resnet20-ort-b64-int8.json"
OUT = HERE / "depth-cpu-quick.json"


def old_prediction(
    model: LatencyModel, terms: dict[str, float], counts: Any, blocks: Any, all_terms: bool
) -> float:
    """The old fit's prediction: `all_terms=False` as the model priced it before (only the table term
    scaled by blocks), True with every term following the blocks."""
    b = blocks or None
    value = terms["scale"] * float(model.tabled_ms(counts, None, b)) + terms["overhead_ms"]
    value += terms["unaligned_ms"] * float(model.unaligned_layers(counts, None, b if all_terms else None))
    value += terms["activation_ms"] * float(model.activation_melems(counts, b if all_terms else None))
    return value


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    dense, _ = load_model(CHECKPOINT)
    dense.eval()
    space = netdiet.analyze(dense, torch.randn(1, 3, 32, 32))
    table = LatencyTable.load(TABLE)
    key = LatencyModel(space, table).calibration_key("fp32")
    old = {
        k: float(table.calibration[key][k]) for k in ("scale", "overhead_ms", "unaligned_ms", "activation_ms")
    }
    calibrate_latency(space, table, n_fit=10, path=TABLE)
    model = LatencyModel(space, table)
    result = validate_latency(space, table, n=12, seed=1000)
    dense_old = old_prediction(model, old, space.counts(None), {}, True)
    rows = result["variants"]
    keeps = random_variants(space, 12, 1000, model.group_multiples("fp32"))
    for row, keep in zip(rows, keeps):
        blocks = dict.fromkeys(row["dropped"], 0)
        counts = space.counts(keep)
        for name, all_terms in (("old_fit_old_model", False), ("old_fit_all_terms", True)):
            ratio = old_prediction(model, old, counts, blocks, all_terms) / dense_old
            row[f"{name}_ratio"] = ratio
            row[f"{name}_ratio_error"] = ratio / row["measured_ratio"] - 1
    summary: dict[str, Any] = {}
    for part, pick in (("depth", lambda r: bool(r["dropped"])), ("width", lambda r: not r["dropped"])):
        chosen = [r for r in rows if pick(r)]
        summary[part] = {
            (name or "new_fit_"): statistics.median(abs(r[f"{name}ratio_error"]) for r in chosen)
            for name in ("", "old_fit_old_model_", "old_fit_all_terms_")
        }
        summary[part]["variants"] = len(chosen)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    out = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread, torch {torch.__version__}",
        "commit": commit.stdout.strip(),
        "wall_s": time.perf_counter() - t0,
        "old_terms": old,
        "new_terms": {k: table.calibration[key][k] for k in old},
        "depth_variants_in_fit": table.calibration[key]["depth_variants"],
        "median_abs_ratio_error": summary,
        "validation": result,
    }
    OUT.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "validation"}, indent=1))
    for r in rows:
        print(
            f"{str(r['dropped']):60s} measured {r['measured_ratio']:.3f}  new {r['predicted_ratio']:.3f}  "
            f"old {r['old_fit_old_model_ratio']:.3f}  old+all-terms {r['old_fit_all_terms_ratio']:.3f}"
        )


if __name__ == "__main__":
    main()
