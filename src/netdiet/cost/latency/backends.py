"""Layer-timing backends: time one conv or linear layer in isolation at given channel counts.

- `onnxruntime`: the layer as a one-node ONNX graph (`onnx_layers`: fp32, or int8 QDQ that ORT fuses into
  its quantized kernels), run by ONNX Runtime's CPU provider with fixed intra-op threads. The default for
  CPU deployment, and the only backend with an int8 precision.
- `torch`: PyTorch eager on CPU (torch.nn modules, no_grad, fixed torch threads).
- `cuda`: PyTorch eager on the current CUDA device, synchronised around every sample.
- `synthetic`: a deterministic formula (MACs plus a penalty for channel counts that are not multiples of
  8; int8 at a fixed fraction) for unit tests and examples: no wall clock, same numbers everywhere.

Every backend reports the environment it measures in, which the table records and checks.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netdiet.cost.latency.onnx_layers import onnx_layer, onnx_layer_int8, ort_kernels
from netdiet.cost.latency.signature import LayerSignature
from netdiet.cost.latency.timing import TimingProtocol, time_call
from netdiet.errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


PRECISIONS = ("fp32", "int8")


class LayerBackend:
    """Times single layers; `env` says where. Subclasses implement `_runner`; `precisions` are the
    arithmetic precisions it can time (int8: the runtime's quantized kernels)."""

    name = "base"
    precisions: tuple[str, ...] = ("fp32",)

    def __init__(self, threads: int = 1, dtype: str = "float32", protocol: TimingProtocol | None = None):
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.threads = int(threads)
        self.dtype = dtype
        self.protocol = protocol or TimingProtocol()

    def device(self) -> str:
        return f"{cpu_name()} ({platform.machine()})"

    def runtime(self) -> dict[str, str]:
        return {"torch": torch.__version__.split("+")[0]}

    def env(self, batch: int) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self.device(),
            "runtime": self.runtime(),
            "threads": self.threads,
            "batch": int(batch),
            "dtype": self.dtype,
        }

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise ConfigError(
                f"backend '{self.name}' cannot time {precision} layers (it times "
                f"{', '.join(self.precisions)}); profile int8 on backend 'onnxruntime'"
            )

    def time_layer(
        self, sig: LayerSignature, batch: int, c_in: int, c_out: int, precision: str = "fp32"
    ) -> float:
        """Median ms of one forward call of the layer at these channel counts, in `precision`."""
        self.check_precision(precision)
        run, sync = self._runner(sig, batch, int(c_in), int(c_out), precision)
        return time_call(run, self.protocol, sync)

    def layer_kernels(
        self, sig: LayerSignature, batch: int, c_in: int, c_out: int, precision: str
    ) -> list[str]:
        """The kernels the runtime runs for the layer (recorded in the table; empty where unknown)."""
        return []

    def _runner(
        self, sig: LayerSignature, batch: int, c_in: int, c_out: int, precision: str = "fp32"
    ) -> tuple[Callable[[], object], Callable[[], None] | None]:
        raise NotImplementedError


def torch_layer(sig: LayerSignature, c_in: int, c_out: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The layer as a torch module and the shape of its input (without the batch dimension)."""
    if sig.op == "linear":
        shape = (c_in,) if sig.tokens == 1 else (sig.tokens, c_in)
        return nn.Linear(c_in, c_out), shape
    nd = len(sig.kernel)
    if sig.op == "convT":
        cls: Any = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]
        layer = cls(
            c_in, c_out, sig.kernel, sig.stride, sig.padding, dilation=sig.dilation, groups=sig.groups
        )
    else:
        cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
        groups = c_in if sig.op == "dwconv" else sig.groups
        c_out = c_in if sig.op == "dwconv" else c_out
        layer = cls(c_in, c_out, sig.kernel, sig.stride, sig.padding, sig.dilation, groups=groups)
    return layer, (c_in, *sig.in_spatial)


class TorchBackend(LayerBackend):
    name = "torch"
    device_type = "cpu"

    def _runner(self, sig, batch, c_in, c_out, precision="fp32"):  # type: ignore[no-untyped-def]
        layer, shape = torch_layer(sig, c_in, c_out)
        dtype = DTYPES[self.dtype]
        layer = layer.to(self.device_type, dtype).eval()
        x = torch.randn(batch, *shape, device=self.device_type, dtype=dtype)
        threads = self.threads

        @torch.no_grad()
        def run() -> object:
            return layer(x)

        def wrapped() -> object:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return run()
            finally:
                torch.set_num_threads(before)

        return (run if self.device_type == "cuda" else wrapped), self._sync()

    def _sync(self) -> Callable[[], None] | None:
        return None


class CudaBackend(TorchBackend):
    name = "cuda"
    device_type = "cuda"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not torch.cuda.is_available():
            raise ConfigError("backend 'cuda' needs a CUDA device; none is visible to torch here")
        super().__init__(*args, **kwargs)

    def device(self) -> str:
        return torch.cuda.get_device_name()

    def runtime(self) -> dict[str, str]:
        return {"torch": torch.__version__.split("+")[0], "cuda": str(torch.version.cuda)}

    def _sync(self) -> Callable[[], None] | None:
        return torch.cuda.synchronize


class OnnxRuntimeBackend(LayerBackend):
    name = "onnxruntime"
    precisions = PRECISIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "backend 'onnxruntime' needs onnx and onnxruntime: pip install 'netdiet[onnx]' "
                "(or choose --backend torch)"
            ) from exc
        super().__init__(*args, **kwargs)
        if self.dtype != "float32":
            raise ConfigError("backend 'onnxruntime' times float32 layers only")

    def runtime(self) -> dict[str, str]:
        import onnx
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}

    def session_options(self) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        return opts

    def _runner(self, sig, batch, c_in, c_out, precision="fp32"):  # type: ignore[no-untyped-def]
        import numpy as np
        import onnxruntime as ort

        rng = np.random.default_rng(0)
        if precision == "int8":
            model, shape = onnx_layer_int8(sig, batch, c_in, c_out)
            x = rng.integers(0, 256, shape).astype(np.uint8)
        else:
            model, shape = onnx_layer(sig, batch, c_in, c_out)
            x = rng.standard_normal(shape).astype(np.float32)
        session = ort.InferenceSession(model, self.session_options(), providers=["CPUExecutionProvider"])
        feed = {"x": x}
        return (lambda: session.run(None, feed)), None

    def layer_kernels(
        self, sig: LayerSignature, batch: int, c_in: int, c_out: int, precision: str
    ) -> list[str]:
        self.check_precision(precision)
        build = onnx_layer_int8 if precision == "int8" else onnx_layer
        return ort_kernels(build(sig, batch, c_in, c_out)[0], self.session_options())


class SyntheticBackend(LayerBackend):
    """Deterministic latency: 1 ms per 1e6 MACs (x1.5 per axis that is not a multiple of 8) + 0.01 ms."""

    name = "synthetic"
    precisions = PRECISIONS

    def device(self) -> str:
        return "synthetic"

    def runtime(self) -> dict[str, str]:
        return {"netdiet-synthetic": "1"}

    def time_layer(
        self, sig: LayerSignature, batch: int, c_in: int, c_out: int, precision: str = "fp32"
    ) -> float:
        self.check_precision(precision)
        return synthetic_ms(sig, batch, c_in, c_out, precision)


SYNTHETIC_INT8_FACTOR = 0.3


def synthetic_ms(sig: LayerSignature, batch: int, c_in: int, c_out: int, precision: str = "fp32") -> float:
    """The synthetic formula; int8 layers cost SYNTHETIC_INT8_FACTOR of the fp32 MACs term."""
    factor = 1.0 + 0.5 * (c_in % 8 != 0) + (0.5 * (c_out % 8 != 0) if not sig.one_axis else 0.0)
    if precision == "int8":
        factor *= SYNTHETIC_INT8_FACTOR
    return 1e-6 * sig.macs(batch, c_in, c_out) * factor + 0.01


BACKENDS: dict[str, type[LayerBackend]] = {
    "onnxruntime": OnnxRuntimeBackend,
    "torch": TorchBackend,
    "cuda": CudaBackend,
    "synthetic": SyntheticBackend,
}


def make_backend(
    name: str, threads: int = 1, dtype: str = "float32", protocol: TimingProtocol | None = None
) -> LayerBackend:
    if name not in BACKENDS:
        raise ConfigError(f"unknown latency backend '{name}'; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name](threads=threads, dtype=dtype, protocol=protocol)


def default_backend_name() -> str:
    """onnxruntime where it is installed (the CPU deployment runtime), else torch eager."""
    try:
        import onnxruntime  # noqa: F401

        return "onnxruntime"
    except ImportError:
        return "torch"
