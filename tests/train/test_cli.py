"""`netdiet train` and `netdiet eval` end to end on tiny real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdiet.cli.main import build_parser, main

TINY = ["--model", "resnet20", "--model-opt", "widths=[4,8,8]", "--data", "digits", "--image-size", "8",
        "--no-augment", "--subset", "200", "--val-size", "100", "--batch-size", "50", "--threads", "1",
        "--no-progress"]  # fmt: skip


def _subparser(name: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("name", ["train", "eval"])
def test_help_explains_every_option(name: str) -> None:
    for action in _subparser(name)._actions:
        assert action.help, f"{name} option {action.option_strings} has no help text"


def test_train_then_eval_reproduces_the_recorded_metrics(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epochs: 2\nlr: 0.05\nseed: 3\n")
    out = tmp_path / "run"
    assert main(["train", *TINY, "--config", str(cfg), "--out", str(out)]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["epochs_trained"] == 2 and meta["train_config"]["seed"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["metrics"]
    assert got["test"]["accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])
    assert got["val"]["n"] == 100
    # an existing run is not overwritten by accident
    assert main(["train", *TINY, "--out", str(out)]) == 2


def test_cli_resume_finishes_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    assert main(["train", "--resume", "--out", str(out)]) == 0  # settings come from run.json
    assert json.loads((out / "model.json").read_text())["epochs_trained"] == 2


def test_bad_data_dir_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["train", "--model", "resnet20", "--data", "cifar10", "--data-dir", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "r"), "--no-progress"])  # fmt: skip
    assert code == 2
    assert "missing" in capsys.readouterr().err


def test_text_model_on_image_data_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["train", "--model", "bert", "--data", "digits", "--out", str(tmp_path / "r")]) == 2
    assert "tokens" in capsys.readouterr().err


def test_bert_on_tsv_saves_and_reuses_its_tokenizer(tmp_path: Path, capsys) -> None:
    root = tmp_path / "sst2"
    root.mkdir()
    rows = [
        f"{i % 2}\t{'good fine great' if i % 2 else 'bad dull awful'} film number {i}" for i in range(120)
    ]
    (root / "train.tsv").write_text("label\tsentence\n" + "\n".join(rows) + "\n")
    (root / "dev.tsv").write_text("label\tcontent\n" + "\n".join(rows[:20]) + "\n")
    out = tmp_path / "run"
    args = ["train", "--model", "bert", "--model-opt", "hidden=16", "--model-opt", "intermediate=32",
            "--model-opt", "layers=1", "--data", "sst2", "--data-dir", str(root), "--vocab-size", "100",
            "--val-size", "20", "--batch-size", "20", "--epochs", "2", "--optimizer", "adamw", "--lr", "3e-3",
            "--threads", "1", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert (out / "tokenizer.json").is_file()
    meta = json.loads((out / "model.json").read_text())
    assert meta["model_config"]["vocab_size"] == meta["data_info"]["vocab_size"] <= 100
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--split", "dev", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["metrics"]
    assert got["dev"]["accuracy"] == pytest.approx(meta["metrics"]["dev"]["accuracy"])
    (out / "tokenizer.json").unlink()
    assert main(["eval", "--checkpoint", str(out)]) == 2


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--model", "resnet20", "--data", "cifar10"], "--data-dir DIR"),
        (["--model", "resnet20", "--data", "nope"], "unknown data set 'nope'"),
        (["--model", "nope", "--data", "digits"], "unknown --model 'nope'"),
        (["--model", "resnet20", "--data", "digits", "--lr", "-1"], "lr must be > 0"),
        (["--model", "resnet20", "--data", "digits", "--batch-size", "0"], "batch_size must be > 0"),
    ],
)
def test_missing_or_bad_options_are_named_and_create_nothing(
    tmp_path: Path, capsys, extra: list[str], needle: str
) -> None:
    assert main(["train", *extra, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
