"""Compression inside a Hugging Face `Trainer`.

    comp = netdiet.Compressor(model, {"input_ids": ids, "attention_mask": mask}, budget="flops=0.5")
    trainer = Trainer(model=comp.model, args=args, train_dataset=ds,
                      callbacks=[NetdietCallback(comp)])
    trainer.train()
    slim = comp.export().model

The penalty joins the loss through a forward hook on `comp.model` (active only in training mode, and only
when the model returns a loss), so the Trainer's own loss computation, gradient accumulation, mixed
precision and schedule are untouched; `Compressor.step()` runs after each optimizer step, before the
Trainer zeroes the gradients (the methods read them).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from netdiet.compressor import Compressor
from netdiet.errors import NonFiniteError

try:  # transformers is optional
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - exercised only without transformers
    TrainerCallback = object  # type: ignore[assignment,misc]


def _add_penalty(compressor: Compressor) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if not module.training:
            return output
        loss = output.get("loss") if hasattr(output, "get") else None
        if loss is None:
            return output
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(
                f"the model's loss is {value} (step {compressor.method_steps + 1} of the gated phase): the "
                "training diverged; lower TrainingArguments.learning_rate or set max_grad_norm",
                step=compressor.method_steps + 1,
                what="loss",
                value=value,
            )
        output["loss"] = loss + compressor.penalty().to(loss.device)
        return output

    return hook


class NetdietCallback(TrainerCallback):  # type: ignore[misc,valid-type]
    """Adds the compressor's penalty to the loss and steps the compressor after each optimizer step."""

    def __init__(self, compressor: Compressor) -> None:
        self.compressor = compressor
        self._handle = compressor.model.register_forward_hook(_add_penalty(compressor))
        self.log: list[dict[str, float]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # the Trainer knows its length before it starts: l1l2 spreads its schedule over it
        self.compressor.begin(int(state.max_steps))
        return control

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # after the optimizer's step and before the Trainer zeroes the gradients: methods read them
        # (l1l2's gate gradients, geta's saliency)
        self.compressor.step()
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        status = self.compressor.status()
        status["step"] = float(state.global_step)
        self.log.append(status)
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self._handle.remove()
        return control
