"""BatchNorm statistics over the global batch under data parallelism, on any backend.

Without it each rank normalises its shard with the shard's own mean and variance, so a run on two
processes computes a different function from the same run on one, and compression on them ends at
different architectures. torch.nn.SyncBatchNorm does this only on CUDA; here the sums travel through
torch.distributed.nn's autograd-aware all_reduce, so gloo on CPU works too. The modules stay the same
objects (their forward is swapped for the duration), so hooks, gates and parameters are untouched.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _synced_forward(self: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not self.training:
        return type(self).forward(self, x)
    c = x.shape[1]
    dims = [0, *range(2, x.dim())]
    shape = [1, c] + [1] * (x.dim() - 2)
    # two passes (the mean, then squares about it), as BatchNorm itself avoids E[x^2] - E[x]^2
    total = dist_fn.all_reduce(torch.cat([x.sum(dims), x.new_full((1,), float(x.numel() // max(c, 1)))]))
    n = total[-1]
    mean = total[:c] / n
    var = dist_fn.all_reduce((x - mean.view(shape)).pow(2).sum(dims)) / n
    if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
        with torch.no_grad():
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else float(self.momentum)
            unbiased = var * (n / (n - 1).clamp_min(1.0))
            self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
            self.running_var.mul_(1 - factor).add_(factor * unbiased.detach())
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
    if self.affine:
        y = y * self.weight.view(shape) + self.bias.view(shape)
    return y


@contextlib.contextmanager
def global_batchnorm(model: nn.Module) -> Iterator[None]:
    """While active (and a process group of more than one rank exists), every BatchNorm of `model`
    in training mode normalises with the statistics of the whole global batch."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        yield
        return
    patched = [
        m for m in model.modules() if isinstance(m, _BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
    ]
    for m in patched:
        m.forward = types.MethodType(_synced_forward, m)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in patched:
            del m.forward
