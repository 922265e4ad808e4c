"""Steering the l1l2 penalty so a gated phase of any length ends at the budget with separated gates.

Three pieces, none of which a user sets:

- `CostSchedule`: the relaxed-cost target moves from dense to the budget over the first
  `anneal_fraction` of the gated steps (cubic, as in gradual pruning: fast while much is redundant,
  slow near the budget), is held at the budget, and in the last `harden_fraction` the read-off setting is
  fixed and the gates of the dropped units fade linearly to exactly zero, so the weights finish training
  on the architecture that is exported and read-off costs no accuracy. The phases are fractions of the
  gated steps, which the training loop knows before it starts (`begin(total_steps)`).
- `PenaltyController`: a proportional-integral controller on the relative error (relaxed cost /
  scheduled target - 1), in units measured on the first step (where the penalty's gradient on the gates
  equals the task loss's), so no scale is assumed.
- `gate_lr_for`: Adam moves a gate by about its learning rate per step; over a short anneal the rate is
  raised so a gate can travel from 1 to 0 within it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from netdiet.errors import ConfigError


@dataclass
class CostSchedule:
    budget_ratio: float  # target / dense at the end of the anneal
    anneal_fraction: float = 0.5
    harden_fraction: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.budget_ratio:
            raise ConfigError(f"budget ratio must be > 0, got {self.budget_ratio}")
        if not 0 < self.anneal_fraction <= 1:
            raise ConfigError(f"anneal_fraction must be in (0, 1], got {self.anneal_fraction}")
        if not 0 <= self.harden_fraction < 1 or self.anneal_fraction + self.harden_fraction > 1:
            raise ConfigError(
                "harden_fraction must be in [0, 1) and anneal_fraction + harden_fraction <= 1, got "
                f"{self.anneal_fraction} + {self.harden_fraction}"
            )

    def anneal_steps(self, total: int) -> int:
        return max(1, round(self.anneal_fraction * total))

    def harden_start(self, total: int) -> int:
        """First step of the hardening phase (== total when there is none)."""
        if self.harden_fraction == 0 or total < 3:
            return total
        return min(total - 1, max(self.anneal_steps(total), round((1 - self.harden_fraction) * total)))

    def target_ratio(self, step: int, total: int) -> float:
        """Scheduled relaxed cost / dense after `step` steps (1 at step 0, the budget from the anneal's end)."""
        r = min(1.0, step / self.anneal_steps(total))
        ratio = min(1.0, self.budget_ratio)
        return ratio + (1.0 - ratio) * (1.0 - r) ** 3

    def fade(self, step: int, total: int) -> float:
        """Factor on the dropped units' gates during hardening: 1 at its start, 0 at the last step."""
        start = self.harden_start(total)
        if step < start:
            return 1.0
        span = max(1, total - start)
        return max(0.0, 1.0 - (step - start + 1) / span)


@dataclass
class PenaltyController:
    """lambda = scale * (kp * e + integral of ki * e), e = relaxed cost / target - 1, of either sign.

    The constraint is an equality: ending *below* the budget wastes capacity the budget allows, so a
    negative lambda pushes the relaxed cost back up (the gates that S(a) was pushing down grow again).
    `scale` is measured on the first step (task-loss gradient norm on the gates over the penalty's), so
    the gains are the same for every model and loss.
    """

    kp: float = 8.0
    ki: float = 8.0
    scale: float = 0.0  # 0 until calibrated
    integral: float = 0.0
    lam: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        if self.kp < 0 or self.ki <= 0:
            raise ConfigError(f"controller gains must be kp >= 0, ki > 0; got kp={self.kp}, ki={self.ki}")

    @property
    def calibrated(self) -> bool:
        return self.scale > 0

    def calibrate(self, task_grad_norm: float, penalty_grad_norm: float) -> None:
        """Unit pressure: the penalty pulls on the gates as hard as the task loss does."""
        if penalty_grad_norm <= 0 or not math.isfinite(task_grad_norm) or task_grad_norm <= 0:
            self.scale = 1.0
        else:
            self.scale = task_grad_norm / penalty_grad_norm

    def update(self, ratio: float, dt: float = 1.0) -> float:
        """`ratio` = relaxed cost / scheduled target; `dt` = this step as a fraction of the anneal, so
        the integral runs in anneal time and the loop behaves the same for 40 steps or 40,000 (the gates'
        speed per step is scaled the same way). Returns the lambda for the next step."""
        self.steps += 1
        if not self.calibrated:
            return self.lam
        error = max(-1.0, min(1.0, ratio - 1.0))
        self.integral = max(-10.0, min(10.0, self.integral + self.ki * error * dt))
        self.lam = self.scale * (self.kp * error + self.integral)
        return self.lam

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "integral": self.integral, "lam": self.lam, "steps": self.steps}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale = float(state["scale"])
        self.integral = float(state["integral"])
        self.lam = float(state["lam"])
        self.steps = int(state["steps"])


def gate_lr_for(anneal_steps: int, base: float) -> float:
    """Adam's step is about its learning rate: let a gate cross [0, 1] twice within the anneal."""
    return max(base, 2.0 / max(1, anneal_steps))
