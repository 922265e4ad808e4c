"""An optimizer that steps the compression method after every update: netdiet in the user's own loop
with one changed line (`opt = comp.wrap_optimizer(opt)`).

It is a `torch.optim.Optimizer` sharing the wrapped one's parameter groups and state, so learning-rate
schedulers, gradient clipping and `state_dict()` keep working on it; only `step()` differs: the wrapped
optimizer's step, then the method's (bit projection, forgetting, gate updates). The method's penalty
still has to be added to the loss (`loss = task_loss + comp.penalty()`); for geta it is zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch


class _Steps(Protocol):
    def step(self, loss: float | None = None) -> None: ...


class CompressingOptimizer(torch.optim.Optimizer):
    def __init__(self, optimizer: torch.optim.Optimizer, compressor: _Steps) -> None:
        # the same group dicts (Optimizer.__init__ adds them as they are) and the same state
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self.state = optimizer.state
        self.optimizer = optimizer
        self.compressor = compressor

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = self.optimizer.step(closure)
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else None
        self.compressor.step(value)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)
