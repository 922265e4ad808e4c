"""Stage 4: methods that choose the knobs (and train the weights) under a budget."""

from netdiet.methods.base import Method
from netdiet.methods.baselines import Magnitude, Uniform, unit_norms
from netdiet.methods.budget import Budget
from netdiet.methods.l1l2 import L1L2, L1L2Config
from netdiet.methods.readoff import Setting
from netdiet.methods.registry import METHODS, make_method
from netdiet.methods.relaxed import relaxed_count

__all__ = [
    "L1L2",
    "METHODS",
    "Budget",
    "L1L2Config",
    "Magnitude",
    "Method",
    "Setting",
    "Uniform",
    "make_method",
    "relaxed_count",
    "unit_norms",
]
