"""The trainer's one config object, validated on construction and serialisable to JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

OptimizerName = Literal["sgd", "adamw"]


@dataclass
class TrainConfig:
    """Everything the training loop needs besides the model and the data.

    `lr` is the peak learning rate reached after `warmup_epochs` (linear warm-up from 0), followed by a
    cosine decay to `lr * min_lr_ratio`. Weight decay is not applied to 1-d parameters (norms, biases)
    nor to parameters whose name contains one of `no_decay_patterns` (gates, cls tokens, ...).
    `amp`/`channels_last` are "auto": on for CUDA, off on CPU. `kd_alpha` > 0 enables distillation from a
    teacher passed to `fit`, with temperature `kd_temperature`.
    """

    epochs: float = 1  # a fraction stops mid-epoch (round(epochs * steps per epoch) steps)
    optimizer: OptimizerName = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    no_decay_patterns: tuple[str, ...] = ("gate", "cls_token", "pos_embed", "position_embeddings")
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    amp: bool | Literal["auto"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    device: str = "auto"
    seed: int = 0
    eval_every: int = 1
    checkpoint_every: int = 1
    progress: bool = True
    log_epochs: bool = True
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ValueError(f"TrainConfig.epochs must be > 0, got {self.epochs}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"TrainConfig.optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"TrainConfig.momentum must be in [0, 1), got {self.momentum}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must lie in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        self.no_decay_patterns = tuple(self.no_decay_patterns)
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(
                f"TrainConfig.warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        for key in ("amp", "channels_last"):
            if getattr(self, key) not in (True, False, "auto"):
                raise ValueError(
                    f"TrainConfig.{key} must be true, false or 'auto', got {getattr(self, key)!r}"
                )
        if self.eval_every <= 0 or self.checkpoint_every <= 0:
            raise ValueError("TrainConfig.eval_every and checkpoint_every must be > 0")
        if not 0 <= self.kd_alpha <= 1:
            raise ValueError(f"TrainConfig.kd_alpha must be in [0, 1], got {self.kd_alpha}")
        if self.kd_temperature <= 0:
            raise ValueError(f"TrainConfig.kd_temperature must be > 0, got {self.kd_temperature}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid: {sorted(known)}")
        return cls(**data)
