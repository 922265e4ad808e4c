"""FLOPs measured by torch.utils.flop_counter, the reference the analytic count is checked against."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from netdiet.graph import normalize_inputs
from netdiet.graph.capture import eval_mode


def measured_flops(model: nn.Module, example_inputs: Any) -> int:
    """Run the model once under FlopCounterMode, with attention on the math backend so it is counted."""
    inputs = normalize_inputs(example_inputs)
    counter = FlopCounterMode(display=False)
    # nn.MultiheadAttention's eval fast path (_native_multi_head_attention) is invisible to the counter.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with eval_mode(model), torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
            model(*inputs.args, **inputs.kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())
