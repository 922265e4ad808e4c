"""Bad input gets a clear, typed error: unsupported ops, broken keep-settings, bad example inputs, recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netdiet
from engine_checks import assert_unchanged, check_keep, outputs, state_snapshot

IMG = torch.randn(2, 3, 8, 8)


class Up(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)  # no rule: mixes channels into space


class UpNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.up = Up()
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.up(F.relu(self.stem(x))))


def test_op_without_rule_on_a_prunable_dim_raises_and_names_op_and_module() -> None:
    with pytest.raises(netdiet.UnsupportedModelError) as info:
        netdiet.analyze(UpNet().eval(), IMG)
    err = info.value
    assert err.op == "aten.pixel_shuffle"
    assert err.module_path == "up"
    assert "exclude=('up',)" in str(err)


def test_excluding_the_module_makes_it_analysable() -> None:
    model = UpNet().eval()
    space = netdiet.analyze(model, IMG, exclude=("up",))
    # The stem's channels feed up.conv, which is excluded: they are kept whole too.
    assert not [g for g in space.groups if any(m.param.startswith("up.") for m in g.members)]
    assert all(g.size != 16 for g in space.groups)
    check_keep(space, space.sample(0.5), IMG)


class Simple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.bn(self.conv(x)))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def space() -> netdiet.Space:
    torch.manual_seed(0)
    return netdiet.analyze(Simple().eval(), IMG, exclude=("fc",))


def test_keep_errors(space: netdiet.Space) -> None:
    (group,) = space.groups
    assert group.name == "conv.out" and group.size == 8
    with pytest.raises(netdiet.InvalidKeepError, match="keep at least 1"):
        space.validate({group.name: []})
    with pytest.raises(netdiet.InvalidKeepError, match="Did you mean"):
        space.validate({"conv.outt": [0]})
    with pytest.raises(netdiet.InvalidKeepError, match="twice"):
        space.validate({group.name: [1, 1, 2]})
    with pytest.raises(netdiet.InvalidKeepError, match="outside"):
        space.validate({group.name: [0, 8]})
    with pytest.raises(netdiet.InvalidKeepError, match="outside"):
        space.validate({group.name: [-1, 2]})
    with pytest.raises(netdiet.InvalidKeepError, match="integer"):
        space.validate({group.name: [0.5, 1.0]})
    with pytest.raises(netdiet.InvalidKeepError):
        space.validate([0, 1])  # type: ignore[arg-type]
    excluded = next(e for e in space.excluded if e.size == 6)
    with pytest.raises(netdiet.InvalidKeepError, match="cannot shrink"):
        space.validate({excluded.name: [0, 1]})
    with pytest.raises(netdiet.InvalidKeepError):
        space.export({group.name: []})
    # Keeping an excluded group whole is allowed; a boolean mask works like indices.
    ok = space.validate({excluded.name: list(range(6)), group.name: torch.tensor([True] * 4 + [False] * 4)})
    assert ok[group.name].tolist() == [0, 1, 2, 3]


def test_sample_respects_constraints(space: netdiet.Space) -> None:
    for seed in range(5):
        keep = space.sample(seed=seed)
        valid = space.validate(keep)
        assert all(1 <= len(valid[g.name]) <= g.size for g in space.groups)
    with pytest.raises(ValueError):
        space.sample(0.0)


class NeedsImage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


@pytest.mark.parametrize(
    "bad",
    [
        torch.randn(2, 3),
        torch.randint(0, 5, (1, 3, 8, 8)),
        (torch.randn(1, 3, 8, 8), torch.randn(1)),
        "image",
    ],
    ids=["wrong-rank", "wrong-dtype", "too-many", "not-a-tensor"],
)
def test_wrong_example_input_is_a_trace_error(bad: object) -> None:
    with pytest.raises(netdiet.TraceError):
        netdiet.analyze(NeedsImage(), bad)


def test_not_a_module_is_a_trace_error() -> None:
    with pytest.raises(netdiet.TraceError, match="nn.Module"):
        netdiet.analyze(lambda x: x, IMG)  # type: ignore[arg-type]


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # Python control flow on tensor data: torch.export cannot capture it
            return self.a(x)
        return self.b(x)


def test_data_dependent_control_flow_is_a_trace_error() -> None:
    with pytest.raises(netdiet.TraceError, match="control flow"):
        netdiet.analyze(DataDependent(), torch.randn(2, 4))


def test_hard_coded_size_in_forward_is_caught_by_verification() -> None:
    class HardCoded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = torch.split(self.conv(x), [4, 4], dim=1)  # literal sizes
            return self.fc(torch.cat([b, a], dim=1).mean((2, 3)))

    model = HardCoded().eval()
    unprobed = netdiet.analyze(model, IMG, probe=False)
    name = next(g.name for g in unprobed.groups)
    with pytest.raises(netdiet.VerificationError, match="hard-codes a size"):
        unprobed.export({name: torch.tensor([0])})
    # The probe finds the literal split at analysis: those groups are frozen, named, and never offered.
    space = netdiet.analyze(model, IMG)
    assert not space.groups
    assert set(space.probe.frozen) == {g.name for g in unprobed.groups}
    with pytest.raises(netdiet.InvalidKeepError, match="cannot shrink"):
        space.validate({name: [0]})


def test_user_model_is_unchanged_by_analyze_mask_export() -> None:
    model = Simple().train()
    model.bn.running_mean.add_(0.5)
    snapshot = state_snapshot(model)
    space = netdiet.analyze(model, IMG)
    keep = space.sample(0.5, seed=1)
    space.mask(keep)
    space.export(keep)
    space.cost(keep)
    assert_unchanged(model, snapshot)
    assert model.training and model.bn.training


def _saved(tmp_path: Path) -> tuple[netdiet.Space, Path]:
    torch.manual_seed(0)
    space = netdiet.analyze(Simple().eval(), IMG)
    slim = space.export(space.sample(0.5, seed=2))
    return space, netdiet.save(slim, tmp_path / "slim")


def test_load_with_a_mismatched_base_model_is_a_recipe_error(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    other = Simple()
    other.conv2 = nn.Conv2d(8, 7, 3, padding=1)
    other.fc = nn.Linear(7, 4)
    with pytest.raises(netdiet.RecipeError, match="does not match"):
        netdiet.load(path, other)
    with pytest.raises(netdiet.RecipeError):
        netdiet.load(path, NeedsImage())


def test_corrupt_or_missing_recipe_is_a_recipe_error(tmp_path: Path) -> None:
    space, path = _saved(tmp_path)
    (path / "recipe.json").write_text("{not json")
    with pytest.raises(netdiet.RecipeError):
        netdiet.load(path, space.model)
    (path / "recipe.json").write_text(json.dumps({"format": "something-else/9", "keep": {}}))
    with pytest.raises(netdiet.RecipeError):
        netdiet.load(path, space.model)
    (path / "recipe.json").unlink()
    with pytest.raises(netdiet.RecipeError):
        netdiet.load(path, space.model)
    with pytest.raises(netdiet.RecipeError):
        netdiet.load(tmp_path / "nowhere", space.model)


def test_save_load_round_trip_is_exact_and_pickle_free(tmp_path: Path) -> None:
    space, path = _saved(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "recipe.json"]
    recipe = json.loads((path / "recipe.json").read_text())
    assert recipe["netdiet_version"] == netdiet.__version__ and recipe["keep"]
    loaded = netdiet.load(path, Simple())
    again = netdiet.load(path, Simple())
    for a, b in zip(outputs(loaded, IMG), outputs(again, IMG), strict=True):
        assert torch.equal(a, b)
