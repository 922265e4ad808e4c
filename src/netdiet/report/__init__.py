"""Stage 6: measure what came out (latency, accuracy, cost) and write reports."""

from netdiet.report.latency import Latency, compare_latency, measure_latency

__all__ = ["Latency", "compare_latency", "measure_latency"]
