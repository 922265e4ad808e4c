"""Stage 1 of the pipeline: trace the model and find which tensor dimensions must shrink together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from netdiet.graph import (  # noqa: F401  (register rules)
    rules_einsum,
    rules_elementwise,
    rules_gather,
    rules_linalg,
    rules_norm,
    rules_shape,
)
from netdiet.graph.capture import ExampleInputs, capture, normalize_inputs
from netdiet.graph.layout import Atom, AtomTable, Cat, Layout, Prod
from netdiet.graph.records import (
    AttentionRecord,
    CostTerm,
    GraphAnalysis,
    GroupsRecord,
    NormRecord,
    ParamInfo,
)
from netdiet.graph.walker import RULES, Walker


def analyze_graph(model: nn.Module, example_inputs: Any, exclude: Sequence[Any] = ()) -> GraphAnalysis:
    """Trace `model` with torch.export and give every parameter dimension a layout over atoms."""
    inputs = normalize_inputs(example_inputs)
    program = capture(model, inputs)
    return Walker(model, program, exclude).run()


__all__ = [
    "RULES",
    "Atom",
    "AtomTable",
    "AttentionRecord",
    "Cat",
    "CostTerm",
    "ExampleInputs",
    "GraphAnalysis",
    "GroupsRecord",
    "Layout",
    "NormRecord",
    "ParamInfo",
    "Prod",
    "analyze_graph",
    "capture",
    "normalize_inputs",
]
