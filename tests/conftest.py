"""Shared test set-up.

torchvision 0.28.0 on these machines is a CUDA build that imports only after the CPU shim in
../shared/tv_cpu_shim.py defines its op schemas; transformers' model imports pull torchvision in,
so the shim must run before anything imports either. The shim is looked for next to every folder
above the repository (`shared/tv_cpu_shim.py`), then at $NETDIET_TV_SHIM. Where torchvision is
installed but still does not import, it is hidden (tests that need it, and timm, skip) and transformers
is told it is absent, so the rest of the suite runs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def _shim_path() -> Path | None:
    candidates = [parent / "shared" / "tv_cpu_shim.py" for parent in _ROOT.parents]
    if os.environ.get("NETDIET_TV_SHIM"):
        candidates.append(Path(os.environ["NETDIET_TV_SHIM"]))
    candidates.append(Path("/work/shared/tv_cpu_shim.py"))  # these machines' shared folder
    return next((p for p in candidates if p.is_file()), None)


def _install_tv_shim() -> None:
    shim = _shim_path()
    if shim is None:
        return
    spec = importlib.util.spec_from_file_location("tv_cpu_shim", shim)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    # Keep the module alive: its torch.library.Library object un-defines the ops when collected.
    sys.modules["tv_cpu_shim"] = module
    spec.loader.exec_module(module)
    module.install()


def _hide_broken_torchvision() -> None:
    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
    except Exception:  # a build that does not match torch: hide it rather than fail every import
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # import -> ImportError: skips
        try:
            import transformers.utils as tu
            import transformers.utils.import_utils as iu

            iu.is_torchvision_available = tu.is_torchvision_available = lambda: False  # type: ignore[assignment]
        except Exception:
            pass


if not os.environ.get("NETDIET_NO_TV_SHIM"):
    _install_tv_shim()
_hide_broken_torchvision()


def _one_thread() -> None:
    """Tests check numbers, not speed. One intra-op thread per process avoids OpenMP oversubscription,
    which on a 2-core machine shared with another process made the suite up to 50x slower."""
    import torch

    torch.set_num_threads(1)


_one_thread()
