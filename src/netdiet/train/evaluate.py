"""Loss and accuracy of a model over a loader, summed across data-parallel ranks."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from netdiet.data.batch import Loader
from netdiet.train.distributed import DistContext, all_reduce_sum


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Loader,
    *,
    device: torch.device | str = "cpu",
    ctx: DistContext | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """{"loss", "accuracy", "n"}; restores the model's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0.0, 0.0
    device = torch.device(device)
    try:
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            inputs = batch.inputs
            if channels_last and inputs[0].ndim == 4:
                inputs = (inputs[0].contiguous(memory_format=torch.channels_last), *inputs[1:])
            autocast = (
                torch.autocast(device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else contextlib.nullcontext()
            )
            with autocast:
                logits = model(*inputs)
            loss_sum += float(F.cross_entropy(logits.float(), batch.target, reduction="sum"))
            correct += float((logits.argmax(-1) == batch.target).sum())
            n += len(batch)
    finally:
        model.train(was_training)
    if ctx is not None:
        loss_sum, correct, n = all_reduce_sum([loss_sum, correct, n], ctx)
    return {"loss": loss_sum / max(n, 1), "accuracy": correct / max(n, 1), "n": int(n)}
