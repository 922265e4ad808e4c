"""The export probe: sizes a model's code fixes are found at analysis, with the reason and the module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import netdiet
from engine_checks import check_keep


class HardCodedHeads(nn.Module):
    """Attention that reshapes with a private attribute the exporter cannot know about."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self._h, self._d, self._inner = heads, dim // heads, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self._h, self._d).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, self._inner)
        return self.proj(y)


class KnownHeads(HardCodedHeads):
    """The same attention written with the attribute names the exporter rewrites."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__(dim, heads)
        self.num_heads, self.head_dim, self.attn_dim = heads, dim // heads, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, self.attn_dim)
        return self.proj(y)


class Net(nn.Module):
    def __init__(self, attn: type[nn.Module]) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.attn = attn()
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.attn(h)
        h = h + self.fc2(F.gelu(self.fc1(h)))
        return self.out(h.mean(1))


X = torch.randn(2, 5, 8)


def _heads(space: netdiet.Space) -> list[netdiet.Group]:
    return [g for g in space.groups if g.kind == "head"]


def test_a_size_fixed_in_code_is_frozen_at_analysis_with_the_module_named() -> None:
    torch.manual_seed(0)
    model = Net(HardCodedHeads).eval()
    unprobed = netdiet.analyze(model, X, probe=False)
    assert _heads(unprobed), "the graph alone sees the heads as prunable"
    space = netdiet.analyze(model, X)
    assert not _heads(space)
    probe = space.probe.to_dict()
    assert list(probe["frozen"]) == [_heads(unprobed)[0].name]
    assert "in module 'attn'" in probe["frozen"][_heads(unprobed)[0].name]
    assert probe["exports"] >= 2 and probe["seconds"] > 0
    frozen = next(e for e in space.excluded if e.name == _heads(unprobed)[0].name)
    assert any(r.startswith("probe:") for r in frozen.reasons)
    # What stays prunable still exports, and the other groups kept their names.
    assert {g.name for g in space.groups} == {g.name for g in unprobed.groups} - {_heads(unprobed)[0].name}
    check_keep(space, space.sample(0.5, seed=1), X)


def test_sizes_held_by_attributes_the_exporter_updates_stay_prunable() -> None:
    torch.manual_seed(0)
    space = netdiet.analyze(Net(KnownHeads).eval(), X)
    assert space.probe.frozen == {} and space.probe.exports == 1
    heads = _heads(space)
    assert len(heads) == 1
    slim = check_keep(space, {heads[0].name: torch.tensor([0, 2])}, X)
    assert slim.attn.num_heads == 2 and slim.attn.attn_dim == 8


def test_many_bad_groups_are_found_with_few_exports() -> None:
    """Three hard-coded attentions in a row, among many good groups: each is found, cost stays ~2 per bad group."""

    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(8, 16)
            self.attn = nn.ModuleList([HardCodedHeads() if i % 2 else KnownHeads() for i in range(6)])
            self.mlp = nn.ModuleList(
                [nn.Sequential(nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 16)) for _ in range(6)]
            )
            self.out = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            for a, m in zip(self.attn, self.mlp):
                h = h + a(h)
                h = h + m(h)
            return self.out(h.mean(1))

    torch.manual_seed(0)
    space = netdiet.analyze(Deep().eval(), X)
    frozen = space.probe.frozen
    assert sorted(frozen) == sorted(f"attn.{i}.heads" for i in (1, 3, 5)), frozen
    assert len(_heads(space)) == 3
    assert space.probe.exports <= 1 + 3 * 3, space.probe.exports
    check_keep(space, space.sample(0.4, seed=2), X)


def test_probe_is_skipped_on_meta_weights() -> None:
    with torch.device("meta"):
        model = Net(KnownHeads)
    space = netdiet.analyze(model, torch.randn(2, 5, 8, device="meta"))
    assert space.probe.skipped and space.probe.exports == 0
