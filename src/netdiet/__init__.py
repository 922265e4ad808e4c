"""netdiet: put any PyTorch network on a diet.

Pipeline: graph -> space -> cost -> method -> export -> report (see docs/architecture.md).
"""

__version__ = "0.1.0"

from netdiet.compress import CompressionResult, compress  # noqa: E402
from netdiet.compressor import Compressor, Exported  # noqa: E402
from netdiet.cost import CostReport, cost, measured_flops, price  # noqa: E402
from netdiet.errors import (  # noqa: E402
    ConfigError,
    InvalidKeepError,
    NetdietError,
    RecipeError,
    TraceError,
    UnsupportedModelError,
    VerificationError,
)
from netdiet.export import load, save, verify  # noqa: E402
from netdiet.methods import Budget  # noqa: E402
from netdiet.space import Assignment, Group, Knob, Space, analyze  # noqa: E402

__all__ = [
    "Assignment",
    "Knob",
    "price",
    "Budget",
    "CompressionResult",
    "Compressor",
    "Exported",
    "compress",
    "ConfigError",
    "CostReport",
    "Group",
    "InvalidKeepError",
    "NetdietError",
    "RecipeError",
    "Space",
    "TraceError",
    "UnsupportedModelError",
    "VerificationError",
    "__version__",
    "analyze",
    "cost",
    "load",
    "measured_flops",
    "save",
    "verify",
]
