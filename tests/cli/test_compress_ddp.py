"""`netdiet compress` under torchrun with 2 processes (gloo on CPU): one result, rank 0 writes it, and the
run follows the single-process run on the same seed and global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netdiet.cli.main import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
    """`netdiet ARGS` under torchrun with 2 processes (one thread each), from this source tree."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "netdiet.cli.main",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _args(dense: Path, out: Path) -> list[str]:
    return [
        "compress",
        "--checkpoint",
        str(dense),
        "--budget",
        "flops=0.5",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--batch-size",
        "64",
        "--seed",
        "0",
        "--threads",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]


def test_two_processes_give_one_model_that_tracks_the_single_process_run(
    dense_run: Path, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_args(dense_run, one)) == 0
    done = _torchrun(_args(dense_run, two), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # Rank 0 wrote the result; the other rank's private folder is gone and nothing else appeared.
    assert (two / "recipe.json").is_file() and (two / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert done.stdout.count("wrote ") == 1
    report_1 = json.loads((one / "report.json").read_text())
    report_2 = json.loads((two / "report.json").read_text())
    for report in (report_1, report_2):
        assert report["compressed"]["flops"] <= 0.5 * report["dense"]["flops"] * (1 + 1e-9)
    # The same gated trajectory: the global batch's loss, BatchNorm statistics over the global batch and
    # the gates' gradients averaged over ranks (rounding differs only in the order of the sums).
    trace_1 = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    trace_2 = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    gated_1 = [r for r in trace_1 if "lam" in r]
    gated_2 = [r for r in trace_2 if "lam" in r]
    assert len(gated_1) == len(gated_2) > 2
    for a, b in zip(gated_1[:2], gated_2[:2]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["lam"] == pytest.approx(a["lam"], rel=1e-4)
    # Every group ends within a few units of the single-process width (float noise flips marginal units:
    # one process with 1 and with 2 threads differs as much), and the two processes agreed with each
    # other, or the DDP fine-tune of the exported model could not have run.
    keep_1 = json.loads((one / "recipe.json").read_text())["keep"]
    keep_2 = json.loads((two / "recipe.json").read_text())["keep"]
    assert set(keep_1) == set(keep_2)
    for name in keep_1:
        assert abs(len(keep_1[name]) - len(keep_2[name])) <= max(2, len(keep_1[name]) // 5), name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "--resume is not supported under torchrun"),
        (["--method", "amc"], "run it in one process"),
    ],
)
def test_what_ranks_cannot_keep_equal_is_refused_before_any_work(
    dense_run: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "refused"
    args = _args(dense_run, out) + extra
    if "--method" in extra:  # amc has no gated epochs
        i = args.index("--epochs")
        del args[i : i + 2]
    done = _torchrun(args, timeout=300)
    assert done.returncode != 0
    assert message in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a partial --out


def test_two_processes_with_block_gates_agree_on_the_dropped_blocks(dense_run: Path, tmp_path: Path) -> None:
    """The block gates are the method's own parameters too: averaged over ranks, so both ranks drop the
    same blocks (else the data-parallel fine-tune of the export could not run)."""
    out = tmp_path / "depth"
    args = _args(dense_run, out)
    args[args.index("flops=0.5")] = "flops=0.3"
    done = _torchrun([*args, "--method-opt", "depth=true"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["compressed"]["flops"] <= 0.3 * report["dense"]["flops"] * (1 + 1e-9)
    blocks = {
        k.split(":", 1)[1]: v for k, v in report["assignment"]["values"].items() if k.startswith("block:")
    }
    assert len(blocks) == 7 and report["dropped_blocks"] == sorted(p for p, v in blocks.items() if v == 0)
