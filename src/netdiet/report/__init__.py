"""Stage 6: measure what came out (latency, accuracy, cost) and write reports."""

from netdiet.report.latency import Latency, compare_latency, measure_latency
from netdiet.report.latency_e2e import measure_model_ms
from netdiet.report.latency_fit import calibrate_latency, validate_latency

__all__ = [
    "Latency",
    "calibrate_latency",
    "compare_latency",
    "measure_latency",
    "measure_model_ms",
    "validate_latency",
]
