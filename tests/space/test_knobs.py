"""Knobs and assignments: one model for widths, ranks and bits, keyed by knob id, round-tripping JSON."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import netdiet
from netdiet.errors import InvalidKeepError
from netdiet.space import ASSIGNMENT_FORMAT, BIT_CHOICES, Assignment, Knob, knob_id, split_id


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4),  # grouped: no rank knob
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 32),
        nn.ReLU(),
        nn.Linear(32, 4),
    )


@pytest.fixture(scope="module")
def space() -> netdiet.Space:
    return netdiet.analyze(small_model(), torch.randn(1, 3, 8, 8))


def test_every_kind_of_knob_is_produced_with_its_domain(space: netdiet.Space) -> None:
    by_kind: dict[str, list[Knob]] = {}
    for k in space.knobs:
        by_kind.setdefault(k.kind, []).append(k)
    assert set(by_kind) == {"keep", "rank", "weight_bits", "act_bits"}
    assert {k.site for k in by_kind["keep"]} == {g.name for g in space.groups}
    # the grouped conv has no rank knob; the others do, with their full rank as the dense value
    # (and the 32 -> 4 classifier is below the size where a rank can pay)
    assert {k.site: k.dense for k in by_kind["rank"]} == {"0.weight": 16, "6.weight": 16}
    assert {k.site for k in by_kind["weight_bits"]} == {"0.weight", "2.weight", "6.weight", "8.weight"}
    assert {k.site for k in by_kind["act_bits"]} == {"0", "2", "6", "8"}
    for k in by_kind["weight_bits"] + by_kind["act_bits"]:
        assert k.dense == 32 and k.choices == BIT_CHOICES
    assert [space.knob_map[k.id] for k in space.knobs] == space.knobs


def test_knob_ids_are_kind_colon_site_and_bad_ids_are_named() -> None:
    assert knob_id("rank", "fc.weight") == "rank:fc.weight"
    assert split_id("act_bits:layer1.0.conv1") == ("act_bits", "layer1.0.conv1")
    with pytest.raises(InvalidKeepError, match="not a knob id"):
        split_id("width:fc")
    with pytest.raises(InvalidKeepError, match="not a knob id"):
        Assignment({"fc.weight": 3})


def test_every_knob_kind_round_trips_through_json(space: netdiet.Space) -> None:
    keep_group = space.group("6.out")
    assignment = Assignment.of(
        keep={keep_group.name: torch.tensor([0, 3, 5])},
        ranks={"6.weight": torch.arange(5)},
        weight_bits={"6.weight": 4, "0.weight": 8},
        act_bits={"6": 8},
    ).validate(space)
    text = json.dumps(assignment.to_json())
    back = Assignment.from_json(json.loads(text), space)
    assert back == assignment
    assert back.keep[keep_group.name].tolist() == [0, 3, 5]
    assert back.ranks["6.weight"].tolist() == [0, 1, 2, 3, 4]
    assert back.weight_bits == {"6.weight": 4, "0.weight": 8} and back.act_bits == {"6": 8}
    assert back.counts()[knob_id("keep", keep_group.name)] == 3
    assert json.loads(text)["format"] == ASSIGNMENT_FORMAT


@pytest.mark.parametrize(
    "values, message",
    [
        ({"keep:no.such.group": [0]}, "not a knob of this model"),
        ({"keep:6.out": 0}, r"outside \[1, 32\]"),
        ({"weight_bits:6.weight": 12}, "not one of the supported widths"),
        ({"rank:6.weight": [0, 99]}, r"indices must lie in \[0, 16\)"),
        ({"rank:6.weight": [1, 1]}, "repeat"),
    ],
)
def test_an_assignment_outside_a_knob_domain_is_refused_with_the_knob_named(
    space: netdiet.Space, values: dict, message: str
) -> None:
    raw = {"format": ASSIGNMENT_FORMAT, "values": values}
    with pytest.raises(InvalidKeepError, match=message):
        Assignment.from_json(raw, space)


def test_relaxed_values_are_allowed_for_pricing_but_not_serialised(space: netdiet.Space) -> None:
    a = Assignment({"weight_bits:6.weight": torch.tensor(5.5, requires_grad=True)}).validate(space)
    with pytest.raises(InvalidKeepError, match="relaxed value"):
        Assignment({"weight_bits:6.weight": 5.5}).to_json()
    assert a.weight_bits["6.weight"].requires_grad


def test_a_recipe_records_the_assignment_and_loads_it_back(space: netdiet.Space, tmp_path) -> None:
    from netdiet.export import export_assignment

    group = next(g for g in space.groups if g.size == 32)
    assignment = Assignment.of(keep={group.name: torch.arange(0, 32, 2)})
    slim, applied = export_assignment(space, assignment)
    assert applied["kept"][group.name] == 16
    netdiet.save(slim, tmp_path / "m")
    recipe = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert Assignment.from_json(recipe["assignment"], space) == assignment
    loaded = netdiet.load(tmp_path / "m", small_model())
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(loaded(x), slim(x))
