"""One call from a float model to a calibrated fake-quantized copy laid out the way int8 runtimes run it.

BN folded into the convs, 8-bit (or the given bits) weight and input quantizers on every conv and
linear, output quantizers where the runtime needs them (`placement`), activation ranges from real
batches. It is post-training quantization by itself, and the starting point of quantization-aware
training: the copy trains like any model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from netdiet.errors import ConfigError
from netdiet.quant.attach import QUANTIZABLE, attach_quantizers
from netdiet.quant.calibrate import calibrate_activations
from netdiet.quant.fold import fold_batchnorm
from netdiet.quant.placement import output_quantizer_sites
from netdiet.quant.plan import QuantPlan


def prepare_quantized(
    model: nn.Module,
    example_inputs: Any,
    calibration: Iterable[Any],
    *,
    bits: Mapping[str, tuple[int, int]] | None = None,
    default_bits: tuple[int, int] = (8, 8),
    method: str = "mse",
    max_batches: int = 8,
    forward: Any = None,
) -> tuple[nn.Module, QuantPlan]:
    """A calibrated fake-quantized copy of `model` (`model` itself is unchanged) and its plan (JSON, to
    save and rebuild it).

    `bits`: module path -> (weight bits, activation bits) for the layers to quantize (32 keeps a side
    float); by default every Conv and Linear gets `default_bits`."""
    folded, pairs = fold_batchnorm(model, example_inputs, keep_scale=True)
    if bits is None:
        bits = {p: default_bits for p, m in folded.named_modules() if isinstance(m, QUANTIZABLE)}
    if not bits:
        raise ConfigError("the model has no Conv or Linear layer to quantize")
    missing = [p for p in bits if p not in dict(folded.named_modules())]
    if missing:
        raise ConfigError(f"no such layers to quantize: {missing[:5]} (use module paths of the model)")
    with_inputs = [p for p, (_, a) in bits.items() if int(a) < 32]
    outputs = output_quantizer_sites(folded, example_inputs, with_inputs)
    plan = QuantPlan(dict(bits), outputs, pairs)
    attach_quantizers(folded, plan.bits, outputs=outputs)
    calibrate_activations(folded, calibration, method=method, max_batches=max_batches, forward=forward)
    return folded, plan
