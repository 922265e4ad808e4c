"""Divergence is caught at once in every training path, named, and nothing with NaN is written or read."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import netdiet
from netdiet.cli.main import main
from netdiet.errors import NonFiniteError
from netdiet.train import TrainConfig, fit, load_model, save_model

TINY = ["--model", "resnet20", "--model-opt", "widths=[4,8,8]", "--data", "digits", "--image-size", "8",
        "--no-augment", "--subset", "200", "--val-size", "100", "--batch-size", "50", "--threads", "1",
        "--no-progress"]  # fmt: skip


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return netdiet.zoo.build("resnet20", widths=[4, 8, 8], num_classes=10)


def test_an_exploding_learning_rate_stops_training_with_the_step_and_a_fix(digits8) -> None:
    with pytest.raises(NonFiniteError) as err:
        fit(tiny(), digits8.train, {}, TrainConfig(epochs=3, lr=1e9, progress=False))
    assert err.value.step is not None and 1 <= err.value.step <= 3 * len(digits8.train)
    text = str(err.value)
    assert f"step {err.value.step}" in text and "learning rate" in text and "stopped before saving" in text


def test_netdiet_train_that_diverges_exits_2_and_saves_no_weights(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--lr", "1e9", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "step" in err
    assert not (out / "model.safetensors").exists() and not (out / "model.json").exists()


def test_a_nan_checkpoint_is_refused_on_load_and_by_compress(tmp_path: Path, digits8) -> None:
    model = tiny()
    save_model(tmp_path, model, "resnet20")
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="NaN/inf"):
        save_model(tmp_path / "nan", model, "resnet20")  # never written ...
    assert not (tmp_path / "nan" / "model.safetensors").exists()
    from safetensors.torch import save_model as raw_save

    raw_save(model, str(tmp_path / "model.safetensors"))  # ... and if someone else wrote it, never loaded
    with pytest.raises(NonFiniteError, match="holds NaN/inf"):
        load_model(tmp_path)
    with pytest.raises(NonFiniteError, match="the model to compress"):
        netdiet.compress(model, digits8.train, "flops=0.5", progress=False)


def test_the_hugging_face_callback_stops_at_a_nan_loss(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from netdiet.compressor import Compressor
    from netdiet.integrations.hf import NetdietCallback

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    model = transformers.BertForSequenceClassification(config)
    example = {"input_ids": torch.zeros(2, 12, dtype=torch.long)}
    comp = Compressor(model, example, "flops=0.5")

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 16

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": torch.full((12,), i % 100), "labels": torch.tensor(i % 2)}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4, learning_rate=1e9,
        max_grad_norm=0.0, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=comp.model, args=args, train_dataset=Rows(), callbacks=[NetdietCallback(comp)]
    )
    with pytest.raises(NonFiniteError) as err:
        trainer.train()
    assert err.value.what == "loss" and not math.isfinite(err.value.value) and err.value.step >= 2
    assert "learning_rate" in str(err.value)
