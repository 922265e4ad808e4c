"""A trained model on disk: `model.safetensors` (weights) + `model.json` (how to rebuild it).

This is the dense checkpoint that `netdiet eval` and the compression benchmarks start from: the zoo
name and config rebuild the architecture, the safetensors file fills the weights, and the data spec
(plus tokenizer.json for text) lets evaluation replay the same data pipeline. No pickle involved.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netdiet import zoo
from netdiet.errors import NonFiniteError, RecipeError
from netdiet.train.atomic import atomic_write_json
from netdiet.train.checkpoint import load_weights, save_weights

WEIGHTS, META = "model.safetensors", "model.json"


def model_config_json(model: nn.Module) -> dict[str, Any]:
    """The dataclass config of a zoo model as JSON data."""
    cfg = getattr(model, "config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ValueError("model has no dataclass `config` attribute; only zoo models can be saved this way")
    return dataclasses.asdict(cfg)


def refuse_non_finite(model: nn.Module, where: str) -> None:
    for key, value in model.state_dict().items():
        if value.is_floating_point() and value.device.type != "meta" and not torch.isfinite(value).all():
            raise NonFiniteError(
                f"{where}: '{key}' holds NaN/inf; the training that produced it diverged. Retrain with a "
                "lower learning rate (or grad_clip); netdiet never saves or loads such weights.",
                what=key,
            )


def save_model(run_dir: str | Path, model: nn.Module, name: str, meta: dict[str, Any] | None = None) -> Path:
    """Write weights then metadata (each atomically); returns the metadata path. Refuses NaN/inf weights."""
    run_dir = Path(run_dir)
    refuse_non_finite(model, str(run_dir))
    save_weights(run_dir / WEIGHTS, model, metadata={"zoo_model": name})
    info = {
        "format": "netdiet-model/1",
        "model": name,
        "model_config": model_config_json(model),
        **(meta or {}),
    }
    atomic_write_json(run_dir / META, info)
    return run_dir / META


def read_model_meta(run_dir: str | Path) -> dict[str, Any]:
    """The parsed model.json of a run directory."""
    path = Path(run_dir) / META
    if not path.is_file():
        raise RecipeError(f"{path}: no model.json here; is this a finished `netdiet train` run directory?")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise RecipeError(f"{path}: invalid JSON ({exc})") from None


def load_model(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the zoo model described by model.json and load its weights; returns (model, meta)."""
    meta = read_model_meta(run_dir)
    model = zoo.build(meta["model"], **meta["model_config"])
    load_weights(Path(run_dir) / WEIGHTS, model)
    refuse_non_finite(model, str(Path(run_dir) / WEIGHTS))
    return model.eval(), meta
