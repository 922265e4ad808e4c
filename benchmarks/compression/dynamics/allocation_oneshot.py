"""l1l2's learned widths cut one-shot (units by weight norm) and fine-tuned for all three epochs.

    python benchmarks/compression/dynamics/allocation_oneshot.py benchmarks/compression/dynamics/r20-0.5-v2.json

Separates what l1l2 learns (the allocation) from what its gated phase does to the weights: the same
widths, the dense weights, the same fine-tune as uniform. Prints val accuracy (val split only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import netdiet
from netdiet.compress import frozen_copy
from netdiet.data import DataSpec, build_data
from netdiet.export import export_model
from netdiet.methods import unit_norms
from netdiet.train import TrainConfig, evaluate, fit_inplace, load_model

ROOT = Path(__file__).resolve().parents[3]


def main() -> None:
    torch.set_num_threads(1)
    kept = json.loads(Path(sys.argv[1]).read_text())["kept"]["l1l2"]
    dense, meta = load_model(ROOT / "benchmarks/baselines/checkpoints/resnet20-cpu-quick")
    spec = dict(meta["data"])
    spec.update(data_dir=str(ROOT.parent / "shared" / "data"), subset=5000)
    data = build_data(DataSpec.from_json(spec))
    data.train.seed = 1000  # type: ignore[attr-defined]
    example = tuple(t[:1] for t in next(iter(data.train)).inputs)
    space = netdiet.analyze(dense, example)
    norms = unit_norms(space, dense)
    keep = {n: torch.sort(torch.argsort(norms[n], descending=True)[:k]).values for n, k in kept.items()}
    slim = export_model(space, keep)
    ratio = netdiet.measured_flops(slim, example) / netdiet.measured_flops(dense, example)
    cfg = TrainConfig(
        optimizer="sgd", lr=0.02, weight_decay=5e-4, epochs=3, progress=False, tensorboard=False, kd_alpha=0.5
    )
    fit_inplace(slim, data.train, {}, cfg, teacher=frozen_copy(dense))
    print(json.dumps({"flops_ratio": ratio, "val_accuracy": evaluate(slim, data.eval["val"])["accuracy"]}))


if __name__ == "__main__":
    main()
