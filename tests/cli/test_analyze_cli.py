"""`netdiet analyze`: tables for people, JSON for machines, clear errors for bad arguments."""

from __future__ import annotations

import json

import pytest

from netdiet import zoo
from netdiet.cli.main import main
from netdiet.cost import measured_flops


def test_json_lists_groups_and_cost_that_match_flop_counter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "resnet20", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "ResNetCifar"
    kinds = {g["kind"] for g in data["groups"]}
    assert kinds == {"channel"}
    # ResNet-20: 3 shared residual streams + 9 inner block channels
    assert len(data["groups"]) == 12
    assert any("model output" in r for e in data["excluded"] for r in e["reasons"])
    model = zoo.build("resnet20")
    assert data["cost"]["flops"] == measured_flops(model, zoo.example_inputs("resnet20", batch_size=1))
    assert data["cost"]["params"] == sum(p.numel() for p in model.parameters())
    assert sum(layer["flops"] for layer in data["cost"]["layers"]) == data["cost"]["flops"]
    # The export probe ran (one export with every group one step smaller, one with every block dropped)
    # and froze nothing.
    assert data["probe"]["exports"] == 2 and data["probe"]["probed"] == 12 and data["probe"]["frozen"] == {}
    assert data["probe"]["seconds"] > 0


def test_table_output_names_groups_and_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "vit"]) == 0
    out = capsys.readouterr().out
    assert "Prunable groups" in out and "Per-layer cost" in out
    assert "blocks.0.attn.heads" in out and "hidden" in out
    assert "export probe: 2 export(s)" in out


def test_exclude_option_keeps_module_whole(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "bert", "--json", "--exclude", "pooler"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert not any(g["name"].startswith("pooler") for g in data["groups"])
    assert any("excluded by the user" in r for e in data["excluded"] for r in e["reasons"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["analyze", "no-such-model"], "unknown model 'no-such-model'"),
        (["analyze", "torch.nn:Identity"], "--input-shape is required"),
        (["analyze", "resnet20", "--batch", "0"], "--batch must be >= 1"),
        (["analyze", "resnet20", "--input-shape", "1,28,28"], "with 3 channels; got 1,28,28"),
        (["analyze", "resnet20", "--input-shape", "3,x"], "comma-separated integers"),
        (["analyze", "bert", "--input-shape", "4096"], "sequence length"),
        (["analyze", "no_such_module_xyz:f", "--input-shape", "3"], "PYTHONPATH"),
        (["analyze", "resnet20", "--exclude", "nothing.here"], "no module path matches"),
    ],
)
def test_bad_arguments_give_clear_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_input_shape_sets_the_example_input_of_a_zoo_model(capsys: pytest.CaptureFixture[str]) -> None:
    flops = {}
    for shape in (None, "3,64,64"):
        assert main(["analyze", "resnet20", "--json", *(["--input-shape", shape] if shape else [])]) == 0
        flops[shape] = json.loads(capsys.readouterr().out)["cost"]["flops"]
    assert flops["3,64,64"] == pytest.approx(4 * flops[None], rel=1e-3)  # 4x the pixels, same network
    assert main(["analyze", "bert", "--json", "--input-shape", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["cost"]["flops"] > 0
