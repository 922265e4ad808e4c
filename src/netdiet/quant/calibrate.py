"""Activation ranges from real batches: percentile or MSE-optimal clipping, never weight statistics.

Each input quantizer sees the layer inputs of a few batches (a random subsample of at most
`SAMPLE` values per batch, enough for a 1e-4 percentile); `mse` then picks the clipping range among
shrunk [min, max] candidates that minimises the quantization error on those values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.quant.quantizers import LSQQuantizer

SAMPLE = 200_000
METHODS = ("mse", "percentile", "minmax")


def _fake(x: torch.Tensor, low: float, high: float, q: LSQQuantizer) -> torch.Tensor:
    low, high = min(low, 0.0), max(high, 0.0)
    step = max((high - low) / (q.qmax - q.qmin), 1e-12)
    zero = round(-low / step)
    return (torch.clamp(torch.round(x / step) + zero, q.qmin, q.qmax) - zero) * step


def choose_range(
    values: torch.Tensor, q: LSQQuantizer, method: str = "mse", percentile: float = 99.99
) -> tuple[float, float]:
    """[low, high] for an unsigned per-tensor quantizer from sampled values."""
    if method not in METHODS:
        raise ConfigError(f"calibration method must be one of {METHODS}, got {method!r}")
    v = values.float().flatten()
    lo, hi = float(v.min()), float(v.max())
    if method == "minmax":
        return lo, hi
    if method == "percentile":
        p = percentile / 100.0
        return float(torch.quantile(v, 1 - p)), float(torch.quantile(v, p))
    best, best_err = (lo, hi), float("inf")
    for frac in torch.linspace(0.3, 1.0, 36).tolist():
        err = float((_fake(v, lo * frac, hi * frac, q) - v).pow(2).mean())
        if err < best_err:
            best, best_err = (lo * frac, hi * frac), err
    return best


@torch.no_grad()
def calibrate_activations(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    method: str = "mse",
    max_batches: int = 8,
    forward: Any = None,
) -> int:
    """Set the range of every activation (input and output) quantizer of `model` from real batches; returns how many were set.

    `batches` yields model inputs (a tensor, a tuple of tensors, or a netdiet Batch); `forward(model,
    batch)` overrides how a batch is fed. Weight quantizers are not touched (they were set from the
    weights when attached). The model runs in eval mode with its input quantizers passing values
    through while they are observed.
    """
    from netdiet.quant.attach import input_quantizers, output_quantizers

    quantizers = {f"{p} (input)": mq for p, mq in input_quantizers(model).items()}
    outputs = {f"{p} (output)": mq for p, mq in output_quantizers(model).items()}
    quantizers.update(outputs)
    if not quantizers:
        return 0
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in quantizers}
    gen = torch.Generator().manual_seed(0)
    handles = []

    def keep(name: str, t: torch.Tensor) -> None:
        x = t.detach().flatten()
        if x.numel() > SAMPLE:
            x = x[torch.randint(0, x.numel(), (SAMPLE,), generator=gen)]
        samples[name].append(x.float().cpu())

    for name, (module, _) in quantizers.items():
        if name in outputs:

            def observe_out(mod: nn.Module, args: Any, out: Any, name: str = name) -> Any:
                keep(name, out)
                return out

            handles.append(module.register_forward_hook(observe_out))
        else:

            def observe(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> tuple[Any, ...]:
                keep(name, args[0])
                return args

            handles.append(module.register_forward_pre_hook(observe, prepend=True))
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        for _, q in quantizers.values():
            q.enabled = False  # observe float inputs: the layers before are not yet calibrated
        seen = 0
        for batch in batches:
            if seen >= max_batches:
                break
            if forward is not None:
                forward(model, batch)
            else:
                inputs = getattr(batch, "inputs", batch)
                model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
            seen += 1
    finally:
        for h in handles:
            h.remove()
        for m, flag in was:
            m.training = flag
        for _, q in quantizers.values():
            q.enabled = True
    if seen == 0:
        raise ConfigError("calibration needs at least one batch; the data yielded none")
    for name, (_, q) in quantizers.items():
        if not samples[name]:
            raise ConfigError(f"quantizer of '{name}' saw no data during calibration (layer not run?)")
        low, high = choose_range(torch.cat(samples[name]), q, method)
        q.init_from(torch.empty(0), torch.tensor([low]), torch.tensor([high]))
    return len(quantizers)
