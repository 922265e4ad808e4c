"""Stage 4: methods that choose knob values (and train the weights) under a budget.

Every module of this package is imported here, so a method file registers itself (`@register_method`).
"""

from netdiet.methods.base import Method, NoOptions
from netdiet.methods.budget import Budget
from netdiet.methods.context import MethodContext
from netdiet.methods.importance import unit_norms
from netdiet.methods.registry import METHODS, discover, make_method, method_class, options_of, register_method
from netdiet.methods.relaxed import relaxed_count

discover()

from netdiet.methods.l1l2 import L1L2, L1L2Config  # noqa: E402
from netdiet.methods.magnitude import Magnitude, MagnitudeConfig  # noqa: E402
from netdiet.methods.uniform import Uniform, UniformConfig  # noqa: E402

__all__ = [
    "L1L2",
    "METHODS",
    "Budget",
    "L1L2Config",
    "Magnitude",
    "MagnitudeConfig",
    "Method",
    "MethodContext",
    "NoOptions",
    "Uniform",
    "UniformConfig",
    "make_method",
    "method_class",
    "options_of",
    "register_method",
    "relaxed_count",
    "unit_norms",
]
