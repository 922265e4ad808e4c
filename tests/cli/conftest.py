"""A tiny dense `netdiet train` run directory shared by the CLI tests (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiet.cli.main import main


@pytest.fixture(scope="session")
def dense_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dense")
    argv = [
        "train",
        "--model",
        "resnet20",
        "--model-opt",
        "widths=[8,16,32]",
        "--data",
        "digits",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--lr",
        "0.05",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    return out
