"""Where the CLI gets a model from: a `netdiet train` run, a compressed run, or the user's own factory.

Every command that reads a model goes through `load_run` so `eval`, `compress` and `report` accept the
same directories. A compressed run stays loadable without its dense run: `base.json` records how to
rebuild the base architecture (zoo name + config, or `module:factory`), the data spec to evaluate on,
and the tokenizer is copied beside it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from torch import nn

from netdiet import zoo
from netdiet.errors import NetdietError, RecipeError
from netdiet.export import load as load_slim
from netdiet.train import load_model
from netdiet.train.checkpoint import load_weights
from netdiet.train.model_io import read_model_meta

BASE_FILE = "base.json"
BASE_FORMAT = "netdiet-base/1"


def is_factory(spec: str) -> bool:
    """`module:factory` or `path/to/file.py:factory` (a zoo name never holds a colon)."""
    return ":" in spec


def build_from_factory(spec: str) -> nn.Module:
    """Call the user's zero-argument factory; every failure names the spec and what to do."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise NetdietError(f"--model {spec!r}: expected module:factory or path/to/file.py:factory")
    module = _import(module_name, spec)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        found = sorted(
            n
            for n, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")
        )
        raise NetdietError(
            f"--model {spec!r}: {module_name} has no function {attr!r}; its functions: "
            f"{', '.join(found) or 'none'}"
        )
    required = [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if required:
        raise NetdietError(
            f"--model {spec!r}: the factory must build the model with no arguments, but it requires "
            f"{', '.join(required)}; wrap it in a function that passes them"
        )
    model = factory()
    if not isinstance(model, nn.Module):
        raise NetdietError(f"--model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _import(module_name: str, spec: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise NetdietError(f"--model {spec!r}: {path} does not exist")
        loader_spec = importlib.util.spec_from_file_location(path.stem, path)
        if loader_spec is None or loader_spec.loader is None:
            raise NetdietError(f"--model {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`, the current folder is importable
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise NetdietError(
            f"--model {spec!r}: cannot import {module_name!r} ({exc}); run from the folder that holds it, "
            "add that folder to PYTHONPATH, or give the file: path/to/file.py:factory"
        ) from None


def absolute_factory(spec: str) -> str:
    """A file factory with its absolute path, so base.json still finds it from another folder."""
    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        return f"{Path(module_name).resolve()}:{attr}"
    return spec


def build_base(base: dict[str, Any]) -> nn.Module:
    """The untrained base architecture recorded in base.json."""
    if base.get("factory"):
        return build_from_factory(str(base["factory"]))
    return zoo.build(base["model"], **(base.get("model_config") or {}))


def base_record(meta: dict[str, Any], data: dict[str, Any], tokenizer: str | None) -> dict[str, Any]:
    """What base.json holds: how to rebuild the base model and which data to evaluate on."""
    return {
        "format": BASE_FORMAT,
        "model": meta.get("model"),
        "model_config": meta.get("model_config"),
        "factory": meta.get("factory"),
        "data": data,
        "tokenizer": tokenizer,
    }


def load_run(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, meta with 'model', 'data' and 'tokenizer') for a trained or compressed run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NetdietError(f"{run_dir}: no such run directory")
    if (run_dir / "model.json").is_file():
        return load_model(run_dir)
    base_file = run_dir / BASE_FILE
    if (run_dir / "recipe.json").is_file() and base_file.is_file():
        import json

        try:
            base = json.loads(base_file.read_text())
        except ValueError as exc:
            raise RecipeError(f"{base_file}: invalid JSON ({exc})") from None
        if "data" not in base:
            raise RecipeError(
                f"{base_file} predates netdiet-base/1 and does not say which data the model was compressed on; "
                "re-run `netdiet compress`"
            )
        model = load_slim(run_dir, build_base(base)).eval()
        meta = dict(base)
        meta["model"] = base.get("factory") or base.get("model")
        return model, meta
    read_model_meta(run_dir)  # raises the message for a directory that is neither
    raise AssertionError("unreachable")


def load_user_model(spec: str, weights: str | Path) -> nn.Module:
    """The user's own model: built by their factory, weights from a safetensors file (checked strictly)."""
    model = build_from_factory(spec)
    load_weights(weights, model)
    return model.eval()
