"""Measured latency as a cost: per-layer tables on a device and runtime, and a model over them."""

from netdiet.cost.latency.backends import BACKENDS, LayerBackend, default_backend_name, make_backend
from netdiet.cost.latency.interp import interpolate, interpolate_torch
from netdiet.cost.latency.model import LatencyModel, layer_needs, model_fingerprint
from netdiet.cost.latency.profiler import profile_space
from netdiet.cost.latency.signature import LayerSignature, signature_of
from netdiet.cost.latency.table import Grid, LatencyTable, TableEntry
from netdiet.cost.latency.timing import TimingProtocol, robust_median, time_call

__all__ = [
    "BACKENDS",
    "LatencyModel",
    "LatencyTable",
    "LayerBackend",
    "Grid",
    "LayerSignature",
    "TableEntry",
    "TimingProtocol",
    "default_backend_name",
    "interpolate",
    "interpolate_torch",
    "layer_needs",
    "make_backend",
    "model_fingerprint",
    "profile_space",
    "robust_median",
    "signature_of",
    "time_call",
]
