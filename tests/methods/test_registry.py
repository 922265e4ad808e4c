"""A new method is one file plus its config: registered by a decorator, driven by Compressor, given a
context (price, evaluator) instead of graph internals."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import netdiet
from netdiet.compressor import Compressor
from netdiet.errors import ConfigError
from netdiet.methods import METHODS, Budget, make_method, options_of, register_method
from netdiet.methods.base import Method

PLUGIN = '''
"""A method written outside netdiet: keeps the first units of every group, scaled to the budget."""
from dataclasses import dataclass

import torch

from netdiet.methods import Method, register_method
from netdiet.space import Assignment


@dataclass
class FirstUnitsConfig:
    ratio_floor: float = 0.05

    def __post_init__(self):
        if not 0 < self.ratio_floor < 1:
            raise ValueError("ratio_floor must be in (0, 1)")


@register_method("first-units-test")
class FirstUnits(Method):
    Config = FirstUnitsConfig
    needs_evaluator = True

    def read_off(self):
        ratio = 1.0
        while ratio > self.config.ratio_floor:
            a = Assignment.of(keep={
                g.name: torch.arange(max(g.min_keep, int(g.size * ratio))) for g in self.space.groups
            })
            if self.context.price(a) <= self.target:
                self.score = self.context.evaluate(a)
                return a
            ratio *= 0.9
        raise RuntimeError("no ratio meets the budget")
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("plugin") / "first_units_method.py"
    path.write_text(textwrap.dedent(PLUGIN))
    spec = importlib.util.spec_from_file_location("first_units_method", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["first_units_method"] = module
    spec.loader.exec_module(module)
    yield module
    METHODS.pop("first-units-test", None)
    sys.modules.pop("first_units_method", None)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def test_the_built_in_methods_register_themselves_with_their_configs() -> None:
    assert {"l1l2", "uniform", "magnitude"} <= set(METHODS)
    assert "gate_lr" in options_of("l1l2") and options_of("magnitude") == ["tolerance"]
    assert options_of("uniform") == []


def test_a_method_in_its_own_file_runs_through_the_compressor_with_an_evaluator(plugin) -> None:
    m = model()
    x = torch.randn(16, 8)
    calls: list[nn.Module] = []

    def evaluator(candidate: nn.Module) -> float:
        calls.append(candidate)
        return float(candidate(x).abs().mean().detach())

    comp = Compressor(
        m, (x[:1],), "flops=0.5", method="first-units-test", evaluator=evaluator, ratio_floor=0.1
    )
    result = comp.export()
    assert result.cost["flops"] <= 0.5 * result.dense_cost["flops"]
    assert len(calls) == 1 and comp.method.score == pytest.approx(evaluator(calls[0]))
    # the evaluator saw the masked candidate: same outputs as the exported slim model
    assert torch.allclose(calls[0](x), result.model(x), atol=1e-5)
    assert result.recipe["method"] == "first-units-test"
    # its options are validated like any method's
    with pytest.raises(ConfigError, match="has no option"):
        Compressor(m, (x[:1],), "flops=0.5", method="first-units-test", evaluator=evaluator, ratio=0.3)


def test_a_method_that_needs_an_evaluator_without_one_is_a_named_error(plugin) -> None:
    m = model()
    with pytest.raises(ConfigError, match="needs an evaluator: pass evaluator="):
        Compressor(m, torch.randn(1, 8), "flops=0.5", method="first-units-test")


def test_registering_needs_a_dataclass_config_and_a_unique_name() -> None:
    class NotADataclass:
        pass

    class Bad(Method):
        Config = NotADataclass

    with pytest.raises(TypeError, match="Config must be a dataclass"):
        register_method("bad-test")(Bad)

    class Other(Method):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_method("uniform")(Other)
    assert METHODS["uniform"].__name__ == "Uniform"


def test_an_unknown_method_lists_the_available_ones() -> None:
    space = netdiet.analyze(model(), torch.randn(1, 8))
    with pytest.raises(ConfigError, match="unknown method 'nope'; available: .*l1l2"):
        make_method("nope", model(), space, Budget(flops=0.5))


def test_methods_never_import_the_export_stage_or_read_graph_internals() -> None:
    root = Path(netdiet.__file__).parent / "methods"
    for path in root.glob("*.py"):
        text = path.read_text()
        assert "netdiet.export" not in text, f"{path.name} imports the export stage"
        assert ".analysis." not in text, f"{path.name} reads the graph analysis directly"
