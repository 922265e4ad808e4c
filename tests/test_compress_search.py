"""`netdiet.compress` with the search methods (amc, evolution, knapsack): the budget is met, candidates
are scored on the held-out split with BatchNorm re-estimated, and every report counts what the search
cost (seconds searching, training, fine-tuning; sub-networks evaluated), l1l2 included."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import netdiet
from netdiet.data import DataSpec, build_data
from netdiet.errors import ConfigError
from netdiet.train import TrainConfig


@pytest.fixture(scope="module")
def digits():
    return build_data(DataSpec("digits", batch_size=64, image_size=16))


def run(
    digits: Any, method: str, budget: str = "flops=0.5", epochs: float = 0, **options: Any
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = netdiet.zoo.build("resnet20", widths=[8, 16, 32])
    result = netdiet.compress(
        model,
        digits.train,
        budget,
        method=method,
        epochs=epochs,
        finetune_epochs=0.2,
        eval_data=digits.eval["val"],
        method_options=options,
        train_config=TrainConfig(lr=0.02, progress=False),
        progress=False,
    )
    return result.report


@pytest.mark.parametrize(
    ("method", "options", "evaluations"),
    [
        ("amc", {"episodes": 6, "warmup": 2, "hidden": 32}, 6),
        (
            "evolution",
            {
                "population": 8,
                "parents": 2,
                "mutations": 3,
                "crossovers": 3,
                "generations": 2,
                "predictor_samples": 10,
            },
            None,
        ),
    ],
)
def test_search_methods_meet_the_budget_and_count_their_evaluations(
    digits, method, options, evaluations
) -> None:
    report = run(digits, method, **options)
    assert report["compressed"]["flops"] <= 0.5 * report["dense"]["flops"] * (1 + 1e-9)
    cost = report["search_cost"]
    assert cost["evaluations"] >= 1 and cost["search_s"] >= cost["evaluation_s"] > 0
    if evaluations is not None:
        assert cost["evaluations"] == evaluations
    else:  # the predictor's samples plus the final pick (repeats are cached)
        assert cost["evaluations"] == report["search"]["evaluated_subnets"] <= 11
    assert cost["train_s"] < 0.01  # no gated phase: the search is the whole method
    assert cost["finetune_s"] > 0 and cost["device"] == "cpu"
    assert report["search"]["best_counts"] == {k: v for k, v in report["kept"].items()}


def test_knapsack_prunes_while_it_trains_and_one_run_methods_report_their_cost_too(digits) -> None:
    report = run(digits, "knapsack", epochs=1, pruning_steps=4)
    assert report["compressed"]["flops"] <= 0.5 * report["dense"]["flops"] * (1 + 1e-9)
    assert report["search"]["pruning_events"] == 4
    assert report["search_cost"]["evaluations"] == 0 and report["search_cost"]["train_s"] > 0
    l1l2 = run(digits, "l1l2", epochs=1)
    assert l1l2["search_cost"]["evaluations"] == 0 and l1l2["search_cost"]["train_s"] > 0
    assert "search" not in l1l2


def test_a_search_method_without_held_out_data_is_refused_naming_it() -> None:
    digits = build_data(DataSpec("digits", batch_size=64, image_size=16))
    with pytest.raises(ConfigError, match="eval_data"):
        netdiet.compress(
            netdiet.zoo.build("resnet20", widths=[8, 16, 32]),
            digits.train,
            "flops=0.5",
            method="amc",
            progress=False,
        )


def test_evolution_searching_bits_meets_a_bops_budget_and_exports_its_bits(digits) -> None:
    pytest.importorskip("onnxruntime")
    small = {"population": 6, "parents": 2, "mutations": 2, "crossovers": 2, "generations": 2}
    report = run(digits, "evolution", "bops=0.03", weight_bits=(4, 8), predictor_samples=8, **small)
    assert report["compressed"]["bops"] <= 0.03 * report["dense"]["bops"] * (1 + 1e-9)
    bits = {v for k, v in report["assignment"]["values"].items() if k.startswith("weight_bits:")}
    assert bits and bits <= {4, 8}
    assert report["quantized"] == "after the float fine-tune (pruned)"


def test_evolution_with_depth_reports_the_blocks_it_dropped(digits) -> None:
    small = {"population": 8, "parents": 2, "mutations": 3, "crossovers": 3, "generations": 2}
    report = run(digits, "evolution", "flops=0.4", depth=True, fitness="evaluate", **small)
    assert report["compressed"]["flops"] <= 0.4 * report["dense"]["flops"] * (1 + 1e-9)
    values = report["assignment"]["values"]
    blocks = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("block:")}
    assert len(blocks) == 7  # every droppable ResNet-20 block was a gene of the chosen candidate
    assert report["dropped_blocks"] == sorted(p for p, v in blocks.items() if v == 0)


def test_l1l2_with_depth_at_its_defaults_reports_the_blocks_it_kept_and_dropped(digits) -> None:
    report = run(digits, "l1l2", "flops=0.3", epochs=1, depth=True)
    assert report["compressed"]["flops"] <= 0.3 * report["dense"]["flops"] * (1 + 1e-9)
    values = report["assignment"]["values"]
    blocks = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("block:")}
    assert len(blocks) == 7  # every droppable block was gated and read off
    assert report["dropped_blocks"] == sorted(p for p, v in blocks.items() if v == 0)
