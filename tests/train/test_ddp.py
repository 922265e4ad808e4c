"""Two CPU processes (torchrun, gloo) reach the same weights as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from netdiet.cli.train import main as train_main

# A model without BatchNorm: with per-rank batch statistics, BN would differ by design, not by bug.
ARGS = [
    "--model", "vit", "--model-opt", "dim=16", "--model-opt", "depth=1", "--model-opt", "heads=2",
    "--model-opt", "image_size=8", "--model-opt", "patch_size=4",
    "--data", "digits", "--image-size", "8", "--subset", "320", "--val-size", "80",
    "--batch-size", "40", "--epochs", "2", "--lr", "0.05", "--threads", "1", "--no-progress",
]  # fmt: skip


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "netdiet.cli.train", *ARGS, "--out", str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert train_main([*ARGS, "--out", str(tmp_path / "single")]) == 0

    ddp, single = (
        load_file(tmp_path / "ddp" / "model.safetensors"),
        load_file(tmp_path / "single" / "model.safetensors"),
    )
    assert ddp.keys() == single.keys()
    for k in ddp:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5, msg=k)

    meta = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert meta["world_size"] == 2
    ref = json.loads((tmp_path / "single" / "model.json").read_text())
    assert meta["metrics"]["test"]["n"] == ref["metrics"]["test"]["n"] == 297  # eval shards add up
    assert abs(meta["metrics"]["test"]["accuracy"] - ref["metrics"]["test"]["accuracy"]) < 0.01
