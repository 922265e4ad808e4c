"""Learning rate as a pure function of the step: linear warm-up, then cosine decay.

A pure function (instead of an LR scheduler object) means a resumed run needs only the step count to
continue on exactly the same schedule.
"""

from __future__ import annotations

import math


def cosine_with_warmup(
    step: int, total_steps: int, warmup_steps: int, peak: float, min_ratio: float = 0.0
) -> float:
    """LR at `step` (0-based): peak * (step+1)/warmup during warm-up, then cosine to peak * min_ratio."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
