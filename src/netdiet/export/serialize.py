"""netdiet.save / netdiet.load: a JSON recipe plus safetensors weights in a directory. No pickle.

Loading re-analyses the base model (the user's own class, freshly built) and re-applies the recipe's
keep-setting, so the slim architecture comes from code, not from unpickled objects.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from netdiet import __version__
from netdiet.errors import ConfigError, RecipeError
from netdiet.export.blocks import drop_blocks
from netdiet.export.exporter import RECIPE_ATTR, shrink
from netdiet.export.lowrank import factorize
from netdiet.export.recipe import build_inputs, fingerprint
from netdiet.export.slicing import copy_model
from netdiet.quant import QuantPlan, apply_plan, quantized_layers
from netdiet.quant.pack import pack_weights, unpack_weights

RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(model: nn.Module, path: str | os.PathLike, *, packed: bool = True) -> Path:
    """Write `path/recipe.json` and `path/model.safetensors` (each written to a temp file, then renamed).

    A quantized model's weights are stored as packed integer codes (`packed`; what deploys), which drops
    the latent float weights quantization-aware training updates; `packed=False` keeps them, to resume
    training exactly."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"{out} exists and is not a directory; netdiet.save writes a directory")
    if any(p.device.type == "meta" for p in model.parameters()):
        raise RecipeError("cannot save a model whose weights are on the meta device (they have no values)")
    for key, value in model.state_dict().items():
        if value.is_floating_point() and value.device.type != "meta" and not torch.isfinite(value).all():
            raise RecipeError(
                f"'{key}' holds NaN/inf: the model diverged in training; netdiet does not save such weights"
            )
    out.mkdir(parents=True, exist_ok=True)
    recipe = dict(getattr(model, RECIPE_ATTR, None) or {"format": "netdiet.recipe/1", "keep": None})
    recipe["netdiet_version"] = __version__
    recipe["model_fingerprint"] = fingerprint(model)
    if packed and quantized_layers(model):
        # quantized weights as packed integer codes (two per byte at <= 4 bits) plus the bit manifest
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        recipe["packed_weights"] = pack_weights(model, state)
        _atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    else:
        recipe.pop("packed_weights", None)
        _atomic_write(out / WEIGHTS_FILE, lambda tmp: save_model(model, tmp))
    text = json.dumps(recipe, indent=1, sort_keys=True)
    _atomic_write(out / RECIPE_FILE, lambda tmp: Path(tmp).write_text(text))
    return out


def read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path) / RECIPE_FILE
    if not file.is_file():
        raise RecipeError(f"no {RECIPE_FILE} in {path}: is this a directory written by netdiet.save?")
    try:
        recipe = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise RecipeError(
            f"{file} is not valid JSON ({exc}); the save was interrupted or the file edited"
        ) from exc
    if not isinstance(recipe, dict) or not str(recipe.get("format", "")).startswith("netdiet.recipe/"):
        raise RecipeError(f"{file} is not a netdiet recipe (missing 'format': 'netdiet.recipe/1')")
    return recipe


def load(path: str | os.PathLike, base_model: nn.Module) -> nn.Module:
    """Rebuild the saved model from `base_model` (same class and config as the original) and the recipe.

    `base_model` is not modified; its weights are irrelevant (they are replaced by the saved ones).
    """
    from netdiet.space import analyze

    recipe = read_recipe(path)
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise RecipeError(f"no {WEIGHTS_FILE} in {path}")
    keep = recipe.get("keep")
    if keep is None:
        model = copy_model(base_model)
    else:
        expected = recipe.get("base_fingerprint")
        if expected and fingerprint(base_model) != expected:
            raise RecipeError(
                f"base model does not match the recipe (fingerprint {fingerprint(base_model)} != {expected}); "
                f"build the same class with the same config as the model that was compressed "
                f"({recipe.get('base_model')})"
            )
        device = next((p.device for p in base_model.parameters()), torch.device("cpu"))
        inputs = build_inputs(recipe["example_inputs"], device)
        space = analyze(
            base_model,
            inputs,
            exclude=[e for e in recipe.get("exclude", []) if isinstance(e, str)],
            probe=False,  # the recipe only names groups the compressed model's probe let through
        )
        model = shrink(space, keep, copy_model(base_model))
        dropped = recipe.get("dropped_blocks") or {}
        if dropped:
            drop_blocks(model, {str(k): v for k, v in dropped.items()})
            setattr(model, RECIPE_ATTR, recipe)
        ranks = recipe.get("ranks") or {}
        if ranks:
            factorize(model, {str(k): int(v) for k, v in ranks.items()})
            setattr(model, RECIPE_ATTR, recipe)
    if recipe.get("quant"):
        try:
            apply_plan(model, QuantPlan.from_json(recipe["quant"]))
        except ConfigError as exc:
            raise RecipeError(
                f"{path}: the recipe's quant plan does not fit the rebuilt model: {exc}"
            ) from exc
        setattr(model, RECIPE_ATTR, recipe)
    try:
        if recipe.get("packed_weights"):
            state = load_file(str(weights))
            unpack_weights(model, state, recipe["packed_weights"])
            model.load_state_dict(state, strict=True)
        else:
            missing, unexpected = load_model(model, str(weights), strict=True)
    except Exception as exc:
        raise RecipeError(f"{weights} does not fit the rebuilt model: {exc}") from exc
    for key, value in model.state_dict().items():
        if value.is_floating_point() and value.device.type != "meta" and not torch.isfinite(value).all():
            raise RecipeError(f"{weights}: '{key}' holds NaN/inf; refusing to load a diverged model")
    return model
