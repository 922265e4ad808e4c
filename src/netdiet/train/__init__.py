"""Training: the one loop (`fit`), its config, checkpoints, evaluation, and model save/load."""

from __future__ import annotations

from netdiet.train.checkpoint import (
    TrainingState,
    has_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from netdiet.train.config import TrainConfig
from netdiet.train.distributed import DistContext, init_distributed, shutdown_distributed
from netdiet.train.evaluate import evaluate
from netdiet.train.losses import distillation_loss, training_loss
from netdiet.train.model_io import load_model, read_model_meta, save_model
from netdiet.train.optim import build_optimizer, split_decay
from netdiet.train.schedule import cosine_with_warmup
from netdiet.train.trainer import TrainResult, fit, fit_inplace

__all__ = [
    "DistContext",
    "TrainConfig",
    "TrainResult",
    "TrainingState",
    "build_optimizer",
    "cosine_with_warmup",
    "distillation_loss",
    "evaluate",
    "fit",
    "fit_inplace",
    "has_checkpoint",
    "init_distributed",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "read_model_meta",
    "save_checkpoint",
    "save_model",
    "save_weights",
    "shutdown_distributed",
    "split_decay",
    "training_loss",
]
