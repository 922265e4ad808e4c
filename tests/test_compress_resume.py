"""`compress(work_dir=...)`: an interrupted call resumes to the same result; a foreign state is refused."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import torch

import netdiet
from netdiet.data import DataSpec, build_data
from netdiet.errors import ConfigError
from netdiet.train import TrainConfig

compress_module = importlib.import_module("netdiet.compress")  # the package attribute is the function


@pytest.fixture(scope="module")
def digits():
    return build_data(DataSpec("digits", batch_size=128, image_size=16, subset=768))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return netdiet.zoo.build("resnet20", widths=[8, 16, 32])


def _run(
    digits,
    model: torch.nn.Module,
    work_dir: Path | None,
    budget: str = "flops=0.5",
    finetune: float = 3,
    **kw: Any,
) -> netdiet.CompressionResult:
    return netdiet.compress(
        model,
        digits.train,
        budget,
        epochs=0.5,
        finetune_epochs=finetune,
        train_config=TrainConfig(lr=0.02, progress=False),
        work_dir=work_dir,
        **kw,
    )


class Interrupted(Exception):
    pass


def test_interrupted_finetune_resumes_to_the_same_model(digits, tmp_path: Path, monkeypatch) -> None:
    model = _model()
    reference = _run(digits, model, None)

    real_fit = compress_module.fit_inplace
    calls = {"n": 0}

    def fit_then_stop(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if kwargs.get("run_dir") is None:  # the gated phase runs whole
            return real_fit(*args, **kwargs)

        def stop(epoch: int, record: dict[str, Any]) -> None:
            if epoch == 2:
                raise Interrupted

        return real_fit(*args, callbacks=[stop], **kwargs)

    monkeypatch.setattr(compress_module, "fit_inplace", fit_then_stop)
    with pytest.raises(Interrupted):
        _run(digits, model, tmp_path / "state")
    monkeypatch.setattr(compress_module, "fit_inplace", real_fit)
    assert (tmp_path / "state" / "gated" / "state.json").is_file()

    gated_runs = {"n": 0}

    def count(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("step_hook") is not None:
            gated_runs["n"] += 1
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(compress_module, "fit_inplace", count)
    resumed = _run(digits, model, tmp_path / "state")
    assert gated_runs["n"] == 0  # the finished gated phase was not trained again
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in reference.history]
    ref_state, got_state = reference.model.state_dict(), resumed.model.state_dict()
    assert ref_state.keys() == got_state.keys()
    for k in ref_state:
        torch.testing.assert_close(got_state[k], ref_state[k], rtol=0, atol=0, msg=k)
    assert resumed.report["compressed"]["flops"] == reference.report["compressed"]["flops"]
    assert resumed.trace == reference.trace


def test_a_state_from_other_settings_is_refused(digits, tmp_path: Path) -> None:
    model = _model()
    _run(digits, model, tmp_path, finetune=0)
    with pytest.raises(ConfigError, match="budget differ"):
        _run(digits, model, tmp_path, budget="flops=0.4", finetune=0)
