"""Fake quantizers trained with the straight-through estimator.

`LSQQuantizer` (Esser et al., learned step size): x -> s * (clamp(round(x / s) + z, qmin, qmax) - z) with
a learned step s (per tensor or per channel) and a fixed zero point z. Weights are signed and
symmetric on the narrow range [-(2^(b-1) - 1), 2^(b-1) - 1] (so folding a negative BN scale into a weight
flips signs without leaving the grid); activations are unsigned [0, 2^b - 1] with a zero point set by
calibration (0 after a ReLU), which is the layout ONNX Runtime's uint8 x int8 kernels take. The gradient
of s is scaled by 1 / sqrt(n * qmax) as LSQ prescribes, so its step size does not grow with the tensor.

`LearnedBitQuantizer` (DJPQ / GETA): a learned step d and range q_m; x -> d * round(clamp(x, -q_m, q_m) / d)
and the bit width is b = log2(q_m / d + 1) + 1, differentiable in both, so a method can price and bound
bits during training. Exported at ceil(b) bits.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from netdiet.errors import ConfigError


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """x forward, gradient scaled by `factor` backward."""
    return x * factor + (x - x * factor).detach()


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer grid of a `bits`-bit quantizer: signed narrow-range symmetric or unsigned."""
    if not 2 <= int(bits) <= 16:
        raise ConfigError(f"quantizers take 2 to 16 bits, got {bits}")
    if signed:
        top = 2 ** (int(bits) - 1) - 1
        return -top, top
    return 0, 2 ** int(bits) - 1


def _sync_ready(module: nn.Module, incompatible: Any) -> None:
    module.__dict__["ready"] = bool(module.initialized)


class _LSQFakeQuant(torch.autograd.Function):
    """y = s * (clamp(round(x / s) + z, qmin, qmax) - z) in one op with LSQ's gradients written out:
    dy/dx = 1 inside the grid, dy/ds = round(x/s) - x/s inside, qmin - z below, qmax - z above (the step's
    gradient scale is applied to s before the call). Same values and gradients as the composed ops,
    without keeping their intermediates for backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int, qmax: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, s, z)
        ctx.qmin, ctx.qmax = qmin, qmax
        return (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, s, z = ctx.saved_tensors
        scaled = x / s
        shifted = torch.round(scaled) + z
        below, above = shifted < ctx.qmin, shifted > ctx.qmax
        inside = ~(below | above)
        grad_x = grad * inside
        ds = torch.where(inside, torch.round(scaled) - scaled, torch.where(below, ctx.qmin - z, ctx.qmax - z))
        return grad_x, (grad * ds).sum_to_size(s.shape), None, None, None


class LSQQuantizer(nn.Module):
    """Fake quantization with a learned step. `axis`: the per-channel axis (None: per tensor)."""

    zero_point: torch.Tensor
    initialized: torch.Tensor

    def __init__(self, bits: int, *, signed: bool, channels: int = 1, axis: int | None = None) -> None:
        super().__init__()
        if axis is None and channels != 1:
            raise ConfigError("a per-tensor quantizer has one channel")
        self.bits = int(bits)
        self.signed = bool(signed)
        self.axis = axis
        self.qmin, self.qmax = qrange(bits, signed)
        self.step = nn.Parameter(torch.ones(channels))
        self.register_buffer("zero_point", torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        self.enabled = True  # False: pass values through (while calibration observes them)
        # the buffer's value as a Python bool, so forward has no data-dependent branch (torch.export)
        self.ready = False
        self.register_load_state_dict_post_hook(_sync_ready)

    def _shape(self, x: torch.Tensor) -> list[int]:
        shape = [1] * x.dim()
        if self.axis is not None:
            shape[self.axis] = -1
        return shape

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
        """Set step and zero point so [low, high] (per channel or scalar) spans the grid."""
        low = torch.minimum(low.float(), torch.zeros_like(low.float()))
        high = torch.maximum(high.float(), torch.zeros_like(high.float()))
        if self.signed:
            step = torch.maximum(high, -low) / self.qmax
            zero = torch.zeros_like(step)
        else:
            step = (high - low) / (self.qmax - self.qmin)
            zero = torch.round(-low / step.clamp_min(1e-12)).clamp(self.qmin, self.qmax)
        self.step.copy_(step.clamp_min(1e-8).reshape(self.step.shape))
        self.zero_point.copy_(zero.reshape(self.zero_point.shape))
        self.initialized.fill_(True)
        self.ready = True

    def scale(self) -> torch.Tensor:
        return self.step.detach().abs().clamp_min(1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.ready:
            raise ConfigError(
                "a quantizer was used before its range was set: calibrate activations on real batches "
                "first (netdiet.quant.calibrate_activations); weights are initialised when attached"
            )
        per_scale = x.numel() // max(1, self.step.numel())
        s = grad_scale(self.step.abs().clamp_min(1e-8), 1.0 / math.sqrt(max(1, per_scale) * self.qmax))
        s = s.reshape(self._shape(x))
        z = self.zero_point.reshape(self._shape(x))
        out: torch.Tensor = _LSQFakeQuant.apply(x, s, z, self.qmin, self.qmax)
        return out

    def extra_repr(self) -> str:
        where = "per-tensor" if self.axis is None else f"per-channel (axis {self.axis})"
        return f"bits={self.bits}, {'signed' if self.signed else 'unsigned'}, {where}"


def bits_of_range(q_m: torch.Tensor, d: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """b = log2(q_m / d + 1) + 1: the bits a signed grid of step d needs to reach +-q_m (DJPQ, GETA);
    an unsigned grid [0, q_m] needs one bit less, b = log2(q_m / d + 1)."""
    return torch.log2(q_m / d + 1.0) + (1.0 if signed else 0.0)


def steps_for_bits(bits: torch.Tensor, signed: bool) -> torch.Tensor:
    """q_m / d at `bits`: 2^(b-1) - 1 signed, 2^b - 1 unsigned (the inverse of `bits_of_range`)."""
    return 2.0 ** (bits - 1.0) - 1.0 if signed else 2.0**bits - 1.0


class _LearnedBitFakeQuant(torch.autograd.Function):
    """y = d * round(clamp(x, low, q_m) / d) in one op, with the straight-through gradients written out:
    dy/dx = 1 inside the range, dy/dd = round(c / d) - c / d (c the clamped x), dy/dq_m = 1 above the
    range (and -1 below it when signed). The same values as composing clamp and a rounded STE, without
    keeping every intermediate activation for backward (training geta at 2x the plain step cost was
    mostly these)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, d: torch.Tensor, q_m: torch.Tensor, signed: bool) -> torch.Tensor:
        low = -q_m if signed else torch.zeros_like(q_m)
        ctx.save_for_backward(x, d, q_m)
        ctx.signed = signed
        return d * torch.round(torch.minimum(torch.maximum(x, low), q_m) / d)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, d, q_m = ctx.saved_tensors
        low = -q_m if ctx.signed else torch.zeros_like(q_m)
        above, below = x >= q_m, x <= low
        inside = ~(above | below)
        scaled = torch.minimum(torch.maximum(x, low), q_m) / d
        grad_x = grad * inside
        grad_d = (grad * (torch.round(scaled) - scaled)).sum_to_size(d.shape)
        g_q = grad * above.to(grad.dtype)
        if ctx.signed:
            g_q = g_q - grad * below.to(grad.dtype)
        return grad_x, grad_d, g_q.sum_to_size(q_m.shape), None


class LearnedBitQuantizer(nn.Module):
    """Fake quantization whose bit width is learned through its step d and range q_m.

    Signed: x -> d * round(clamp(x, -q_m, q_m) / d); unsigned (activations after a ReLU): clamp to
    [0, q_m]. `project(b_min, b_max)` moves d so the bit width lies in the bounds."""

    def __init__(
        self, channels: int = 1, axis: int | None = None, init_bits: float = 8.0, signed: bool = True
    ) -> None:
        super().__init__()
        self.axis = axis
        self.init_bits = float(init_bits)
        self.signed = bool(signed)
        self.d = nn.Parameter(torch.ones(channels))
        self.q_m = nn.Parameter(torch.ones(channels) * float(steps_for_bits(torch.tensor(init_bits), signed)))

    @torch.no_grad()
    def init_from(self, high: torch.Tensor, bits: float | None = None) -> None:
        q_m = high.float().abs().clamp_min(1e-8).reshape(self.q_m.shape)
        self.q_m.copy_(q_m)
        b = torch.tensor(float(bits if bits is not None else self.init_bits))
        self.d.copy_(q_m / steps_for_bits(b, self.signed))

    def bits(self) -> torch.Tensor:
        return bits_of_range(self.q_m.abs().clamp_min(1e-8), self.d.abs().clamp_min(1e-8), self.signed)

    @torch.no_grad()
    def project(self, b_min: float, b_max: float) -> None:
        """Move d so every channel's bit width lies in [b_min, b_max] (q_m kept): a projection, not a hope."""
        if not 2 <= b_min <= b_max:
            raise ConfigError(f"bit bounds must satisfy 2 <= b_min <= b_max, got [{b_min}, {b_max}]")
        q_m = self.q_m.abs().clamp_min(1e-8)
        self.q_m.copy_(q_m)  # the sign of the range is not a degree of freedom
        bits = self.bits().clamp(b_min, b_max)
        self.d.copy_(q_m / steps_for_bits(bits, self.signed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        if self.axis is not None:
            shape[self.axis] = -1
        # LSQ's gradient scale, 1 / sqrt(values per step x levels): without it a plain optimizer step on
        # a weight's d (~1e-3) moved its bit width by whole bits every step
        # (a tensor, so a GPU forward does not wait to read it back)
        levels = (self.q_m.detach().abs() / self.d.detach().abs().clamp_min(1e-8)).mean().clamp_min(1.0)
        factor = (levels * max(1, x.numel() // max(1, self.d.numel()))).rsqrt()
        d = grad_scale(self.d.abs().clamp_min(1e-8), factor).reshape(shape)
        q_m = grad_scale(self.q_m.abs(), factor).reshape(shape)
        out: torch.Tensor = _LearnedBitFakeQuant.apply(x, d, q_m, self.signed)
        return out

    def extra_repr(self) -> str:
        return f"learned bits, {'signed' if self.signed else 'unsigned'}"
