"""Steering the penalty weight lambda so the run ends at the budget, without a sweep.

Dual ascent on the constraint surrogate(cost) / target <= 1: after `warmup_steps` (task loss only, so
the gates first learn what matters), lambda grows while the relaxed cost is above the target and
shrinks (never below 0) when it is under. The step is proportional to the relative violation, so the
same `lr` works for any model size and any budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from netdiet.errors import ConfigError


@dataclass
class DualAscent:
    lr: float = 0.05
    warmup_steps: int = 0
    max_lambda: float = 100.0
    lam: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"controller lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def update(self, ratio: float) -> float:
        """`ratio` = relaxed cost / target. Returns the new lambda."""
        self.steps += 1
        if self.steps <= self.warmup_steps:
            return self.lam
        self.lam = min(self.max_lambda, max(0.0, self.lam + self.lr * (ratio - 1.0)))
        return self.lam

    def state_dict(self) -> dict[str, float]:
        return {"lam": self.lam, "steps": self.steps}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lam = float(state["lam"])
        self.steps = int(state["steps"])
