"""Resumable training checkpoints: weights as safetensors, optimizer state via torch.save, a JSON index.

Per epoch the weight and optimizer files get new names; only after both are on disk does the index
`checkpoint.json` (with their sha256) atomically switch to them, and only then are older files removed.
A run killed at any moment therefore resumes from a complete checkpoint. The optimizer state is read
back with `torch.load(..., weights_only=True)`: tensors and plain containers only, never arbitrary pickles.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from netdiet.errors import RecipeError
from netdiet.train.atomic import atomic_write, atomic_write_json

INDEX = "checkpoint.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def state_for_safetensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict safetensors accepts: contiguous CPU tensors, shared storage split into copies."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Atomically write the model's state dict as safetensors."""
    state = state_for_safetensors(model)
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def load_weights(path: str | Path, model: nn.Module, strict: bool = True) -> None:
    """Load a safetensors state dict into `model` (shapes must match)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: weight file does not exist")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError, not exported as a stable type
        raise RecipeError(f"{path}: not a valid safetensors file ({exc})") from None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=strict)
    except RuntimeError as exc:
        raise RecipeError(f"{path}: weights do not match the model ({exc})") from None


@dataclass
class TrainingState:
    """What a resume needs besides the weights: completed epochs, global step, history, optimizer."""

    epoch: int
    step: int
    history: list[dict[str, Any]]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None = None


def save_checkpoint(
    ckpt_dir: str | Path, model: nn.Module, state: TrainingState, extra: dict | None = None
) -> None:
    """Write epoch `state.epoch`'s checkpoint and atomically make it the latest."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{state.epoch:05d}"
    weights, train_state = ckpt_dir / f"model-{tag}.safetensors", ckpt_dir / f"train-{tag}.pt"
    save_weights(weights, model)
    payload = {"optimizer": state.optimizer, "scaler": state.scaler}
    atomic_write(train_state, lambda tmp: torch.save(payload, tmp))
    index = {
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "model_file": weights.name,
        "train_file": train_state.name,
        "sha256": {weights.name: _sha256(weights), train_state.name: _sha256(train_state)},
        "extra": extra or {},
    }
    atomic_write_json(ckpt_dir / INDEX, index)
    keep = {weights.name, train_state.name, INDEX}
    for old in ckpt_dir.iterdir():
        if old.name not in keep and (old.name.startswith(("model-", "train-"))):
            old.unlink(missing_ok=True)


def has_checkpoint(ckpt_dir: str | Path) -> bool:
    """True if `ckpt_dir` holds a checkpoint index."""
    return (Path(ckpt_dir) / INDEX).is_file()


def load_checkpoint(ckpt_dir: str | Path, model: nn.Module) -> TrainingState:
    """Restore the model weights in place and return the rest of the training state."""
    ckpt_dir = Path(ckpt_dir)
    index_path = ckpt_dir / INDEX
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{index_path}: cannot read checkpoint index ({exc})") from None
    for name, digest in index["sha256"].items():
        path = ckpt_dir / name
        if not path.is_file() or _sha256(path) != digest:
            raise RecipeError(f"{path}: missing or does not match the checksum in {index_path}")
    load_weights(ckpt_dir / index["model_file"], model)
    payload = torch.load(ckpt_dir / index["train_file"], map_location="cpu", weights_only=True)
    return TrainingState(
        index["epoch"], index["step"], index["history"], payload["optimizer"], payload["scaler"]
    )
