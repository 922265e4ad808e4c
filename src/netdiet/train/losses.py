"""Training loss: cross-entropy with label smoothing, optionally mixed with distillation from a teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al.'s KL(teacher_T || student_T) scaled by T^2 so its gradient size does not depend on T."""
    t = temperature
    log_p = F.log_softmax(student_logits.float() / t, dim=-1)
    q = F.softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p, q, reduction="batchmean") * (t * t)


def training_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    teacher_logits: torch.Tensor | None = None,
    kd_alpha: float = 0.0,
    kd_temperature: float = 4.0,
) -> torch.Tensor:
    """(1 - kd_alpha) * CE(label smoothing) + kd_alpha * KD; plain CE when no teacher is given."""
    ce = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    if teacher_logits is None or kd_alpha == 0.0:
        return ce
    return (1 - kd_alpha) * ce + kd_alpha * distillation_loss(logits, teacher_logits, kd_temperature)
