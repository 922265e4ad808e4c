"""Shared test set-up.

torchvision 0.28.0 on these machines is a CUDA build that imports only after the CPU shim in
../shared/tv_cpu_shim.py defines its op schemas; transformers' model imports pull torchvision in,
so the shim must run before anything imports either. Where the shim is absent this does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SHIM = Path(__file__).resolve().parents[2] / "shared" / "tv_cpu_shim.py"


def _install_tv_shim() -> None:
    if not _SHIM.is_file():
        return
    spec = importlib.util.spec_from_file_location("tv_cpu_shim", _SHIM)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    # Keep the module alive: its torch.library.Library object un-defines the ops when collected.
    sys.modules["tv_cpu_shim"] = module
    spec.loader.exec_module(module)
    module.install()


_install_tv_shim()


def _one_thread() -> None:
    """Tests check numbers, not speed. One intra-op thread per process avoids OpenMP oversubscription,
    which on a 2-core machine shared with another process made the suite up to 50x slower."""
    import torch

    torch.set_num_threads(1)


_one_thread()
