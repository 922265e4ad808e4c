"""A run killed with SIGKILL mid-training resumes with --resume to the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from netdiet.cli.train import main as train_main

ARGS = ["--model", "resnet20", "--model-opt", "widths=[4,8,8]", "--data", "digits", "--image-size", "8", "--no-augment",
        "--subset", "1000", "--val-size", "100", "--batch-size", "50", "--epochs", "3", "--lr", "0.05",
        "--threads", "1", "--no-progress"]  # fmt: skip


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "netdiet.cli.train", *ARGS, "--out", str(killed)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    index = killed / "checkpoint" / "checkpoint.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if index.is_file() and json.loads(index.read_text())["epoch"] >= 1:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epochs_done = json.loads(index.read_text())["epoch"]
    if epochs_done >= 3:
        pytest.skip("the run finished before it could be killed (machine too fast for this test)")
    assert not (killed / "model.safetensors").exists()

    assert train_main(["--resume", "--out", str(killed)]) == 0
    assert train_main([*ARGS, "--out", str(tmp_path / "full")]) == 0
    a, b = load_file(killed / "model.safetensors"), load_file(tmp_path / "full" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
