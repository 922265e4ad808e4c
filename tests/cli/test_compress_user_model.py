"""`netdiet compress --model module:factory --weights W --data D`: a user's own model from the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_model

from netdiet.cli.main import main

FACTORY = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class MyNet(nn.Module):
    def __init__(self, width=16, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(Block(width), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def build():
    return MyNet()


def build_with(width):
    return MyNet(width)
"""


@pytest.fixture()
def user_model(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "mynet.py"
    src.write_text(FACTORY)
    namespace: dict = {}
    exec(compile(FACTORY, str(src), "exec"), namespace)
    torch.manual_seed(0)
    weights = tmp_path / "mynet.safetensors"
    save_model(namespace["build"](), str(weights))
    return src, weights


def _compress(model: str, weights: Path, out: Path, *extra: str) -> int:
    argv = [
        "compress",
        "--model",
        model,
        "--weights",
        str(weights),
        "--data",
        "digits",
        "--budget",
        "flops=0.5",
    ]
    argv += [
        "--epochs",
        "0.5",
        "--finetune-epochs",
        "1",
        "--subset",
        "256",
        "--out",
        str(out),
        "--no-progress",
    ]
    return main([*argv, *extra])


def test_a_users_own_model_compresses_and_evaluates_from_its_output_alone(
    user_model: tuple[Path, Path], tmp_path: Path, capsys, monkeypatch
) -> None:
    src, weights = user_model
    out = tmp_path / "slim"
    monkeypatch.chdir(tmp_path)  # a relative file path, as a user types it
    assert _compress("mynet.py:build", weights, out, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.45 <= report["compressed"]["flops"] / report["dense"]["flops"] <= 0.5
    base = json.loads((out / "base.json").read_text())
    assert base["factory"] == f"{src.resolve()}:build" and base["data"]["name"] == "digits"
    monkeypatch.chdir(Path(__file__).parent)  # the result is found from anywhere
    assert main(["eval", "--checkpoint", str(out), "--split", "test", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["test"]["accuracy"] == pytest.approx(
        json.loads((out / "report.json").read_text())["compressed"]["test_accuracy"]
    )


def test_an_importable_module_factory_works_like_a_file(
    user_model: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    _, weights = user_model
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    sys.modules.pop("mynet", None)
    assert _compress("mynet:build", weights, tmp_path / "slim") == 0
    sys.modules.pop("mynet", None)


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("no_such_module_xyz:build", "PYTHONPATH"),
        ("{dir}/mynet.py:missing", "its functions: build, build_with"),
        ("{dir}/mynet.py:build_with", "requires width"),
        ("{dir}/absent.py:build", "does not exist"),
        ("resnet20", "--checkpoint"),
    ],
)
def test_a_model_that_cannot_be_built_is_a_clear_error(
    user_model: tuple[Path, Path], tmp_path: Path, capsys, model: str, needle: str
) -> None:
    _, weights = user_model
    out = tmp_path / "slim"
    assert _compress(model.format(dir=tmp_path), weights, out) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".slim.partial").exists()


def test_wrong_weights_and_missing_options_are_refused(
    user_model: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    src, weights = user_model
    other = tmp_path / "other.safetensors"
    save_model(torch.nn.Linear(3, 3), str(other))
    assert _compress(f"{src}:build", other, tmp_path / "a") == 2
    assert "do not match the model" in capsys.readouterr().err
    assert (
        main(["compress", "--model", f"{src}:build", "--budget", "flops=0.5", "--out", str(tmp_path / "b")])
        == 2
    )
    assert "needs --weights and --data" in capsys.readouterr().err
    assert main(["compress", "--budget", "flops=0.5", "--out", str(tmp_path / "c")]) == 2
    assert "--checkpoint RUN_DIR" in capsys.readouterr().err
    argv = ["compress", "--model", f"{src}:build", "--weights", str(weights), "--data", "cifar10"]
    assert main([*argv, "--budget", "flops=0.5", "--out", str(tmp_path / "d")]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert not any(p.name in ("a", "b", "c", "d") for p in tmp_path.iterdir())
