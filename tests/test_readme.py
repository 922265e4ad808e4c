"""README's code runs: every Python block and every command, on small inputs.

The blocks are read from README.md itself, so a renamed flag or function breaks this test. Sizes are
shrunk by the explicit substitutions below (each must still match README, or the test says which one
went stale); the install/test commands are checked against .ci/run, which runs them on a clean clone.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import pytest
import torch

import netdiet
from netdiet.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# README text -> what runs here: small data, few epochs, the synthetic latency backend (ORT profiling of a
# whole grid takes minutes); the commands and flags themselves are untouched
PY_SMALL = {
    "epochs=5, finetune_epochs=5": "epochs=0.2, finetune_epochs=0.2",
    "epochs=1, finetune_epochs=2": "epochs=0.2, finetune_epochs=0.2",
    'method="amc", epochs=0, finetune_epochs=3': 'method="amc", method_options={"episodes": 4, "warmup": 2}, '
    "epochs=0, finetune_epochs=0.2",
    'method_options={"fitness": "predictor"},\n                     epochs=0, finetune_epochs=3': "method_options={"
    '"fitness": "predictor", "predictor_samples": 8, "population": 6, "parents": 2, "mutations": 2, '
    '"crossovers": 2, "generations": 2}, epochs=0, finetune_epochs=0.2',
}
CLI_SMALL = {
    "--data cifar10 --data-dir ../shared/data --epochs 30": "--data digits --image-size 16 "
    "--model-opt widths=[8,16,32] --subset 300 --epochs 1",
    "--epochs 5 --finetune-epochs 5": "--epochs 0.5 --finetune-epochs 0.5 --subset 256",
    "--backend onnxruntime --batch 64 --out r20-ort-b64.json --validate 10": "--backend synthetic --batch 64 "
    "--out r20-ort-b64.json --validate 2",
    "--data cifar10 --data-dir ../shared/data --budget flops=0.5": "--data digits --budget flops=0.5 "
    "--epochs 0.3 --finetune-epochs 0.3",
    "--finetune-epochs 3 --out runs/r20-amc": "--finetune-epochs 0.3 --method-opt episodes=6 --method-opt warmup=2 "
    "--out runs/r20-amc",
    "--batch 64 --int8 --out r20-ort-b64.json": "--backend synthetic --batch 64 --int8 --out r20-ort-b64.json "
    "--calibrate 2",
}

MYNET = """
from torch import nn


def build():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
"""


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def shrink(text: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        text = text.replace(old, new)
    return text


def test_every_substitution_still_matches_readme() -> None:
    code = "\n".join(blocks("python") + blocks("bash"))
    stale = [old for old in {**PY_SMALL, **CLI_SMALL} if old not in code]
    assert not stale, f"README changed; update the substitutions in this test: {stale}"


def test_the_install_and_test_commands_are_the_ones_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    install = [b for b in blocks("bash") if "pip install" in b]
    assert len(install) == 2
    assert 'pip install torch==2.13.0 && pip install -e ".[test]"' in install[0] and "pytest" in install[0]
    assert 'pip install torch==2.13.0 && pip install -e ".[test]"' in ci and "\npytest" in ci
    assert install[1].strip().endswith("netdiet demo")  # run shortened by tests/cli/test_demo_and_report.py


def test_the_python_blocks_run(tmp_path: Path, monkeypatch) -> None:
    from netdiet.data import DataSpec, build_data

    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    data = build_data(DataSpec("digits", batch_size=64, image_size=32))
    assert (
        main(["profile", "resnet20", "--backend", "synthetic", "--batch", "64", "--out", "r20-ort-b64.json"])
        == 0
    )
    namespace: dict = {
        "train_loader": data.train,
        "val_loader": data.eval["val"],
        "loader": [(b.inputs[0], b.target) for _, b in zip(range(3), data.train)],
        "example_inputs": torch.randn(1, 3, 32, 32),
        "batches": [b.inputs[0] for _, b in zip(range(2), data.train)],
        "bert": netdiet.zoo.build("bert", vocab_size=60, hidden=32, intermediate=64, heads=2).eval(),
        "bert_inputs": (torch.randint(1, 60, (1, 12)),),
        "bert_batches": [(torch.randint(1, 60, (4, 12)),) for _ in range(2)],
    }
    python = blocks("python")
    assert len(python) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "table not calibrated" for a synthetic table is expected here
        for code in python:
            exec(compile(shrink(code, PY_SMALL), "README.md", "exec"), namespace)
    assert (tmp_path / "slim" / "recipe.json").is_file()
    assert namespace["result"].report["latency"]["batch"] == 64
    assert namespace["slim"] is not None and namespace["comp"].method.metric == "latency_ms"
    assert namespace["written"].int8_kernels.get("QLinearConv", 0) >= 19
    assert (
        namespace["q"].report["compressed"]["bops"]
        <= 0.03 * namespace["q"].report["dense"]["bops"] * 1.000001
    )
    assert (
        namespace["g"].report["compressed"]["bops"]
        <= 0.05 * namespace["g"].report["dense"]["bops"] * 1.000001
    )
    assert namespace["a"].report["search_cost"]["evaluations"] == 4
    assert namespace["e"].report["search"]["predictor"]["held_out"] == 2
    assert namespace["applied"]["dropped_blocks"] == {"encoder.layers.encoder_layer_11": 0}
    assert namespace["space"].probe.frozen == {} and len(namespace["space"].knobs_of("block")) == 12


def test_the_commands_run(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mynet.py").write_text(MYNET)
    from safetensors.torch import save_model

    namespace: dict = {}
    exec(MYNET, namespace)
    save_model(namespace["build"](), "mynet.safetensors")
    commands = [
        line.split("  #")[0]
        for block in blocks("bash")
        if "pip install" not in block
        for line in block.splitlines()
        if line.startswith("netdiet ")
    ]
    assert len(commands) >= 7
    for line in commands:
        argv = shlex.split(shrink(line, CLI_SMALL))[1:]
        argv += ["--no-progress"] if argv[0] in ("train", "compress", "profile") else []
        assert main(argv) == 0, f"README command failed: {line}\n{capsys.readouterr().err}"
    assert (tmp_path / "runs" / "r20-half" / "model.onnx").is_file()
    assert (tmp_path / "runs" / "r20-half" / "report.md").is_file()
    assert (tmp_path / "runs" / "r20-fast" / "report.json").is_file()
    assert (tmp_path / "runs" / "mynet-half" / "base.json").is_file()
    assert (tmp_path / "runs" / "r20-int8" / "model.int8.onnx").is_file()
    assert (tmp_path / "runs" / "r20" / "model.int8.onnx").is_file()
    assert (tmp_path / "runs" / "r20-int8-fast" / "report.json").is_file()
    assert (tmp_path / "runs" / "r20-geta" / "model.int8.onnx").is_file()
    assert (tmp_path / "runs" / "r20-amc" / "report.json").is_file()
    assert (tmp_path / "runs" / "r20-halp" / "report.json").is_file()


def test_the_analyze_output_shown_in_readme_is_what_the_command_prints(capsys) -> None:
    shown = re.search(r"`netdiet analyze resnet20`.*?```\n(.*?)\n", README, flags=re.S)
    assert shown is not None
    assert main(["analyze", "resnet20"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert " ".join(shown.group(1).split()) in printed


@pytest.mark.parametrize(
    "name", ["netdiet.cost.latency.LatencyTable", "netdiet.integrations.hf.NetdietCallback"]
)
def test_names_readme_mentions_exist(name: str) -> None:
    import importlib

    module, _, attr = name.rpartition(".")
    assert hasattr(importlib.import_module(module), attr)
