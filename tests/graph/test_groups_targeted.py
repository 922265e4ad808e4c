"""Group structure for each op family: sizes, kinds and members, not just "it runs".

Every model here is also exported at a random keep-setting (verified against the mask) and its cost
checked against FlopCounterMode, so a wrong group would fail twice.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netdiet
from engine_checks import check_dense, check_keep


def kinds(space: netdiet.Space) -> Counter:
    return Counter((g.kind, g.size) for g in space.groups)


def members(space: netdiet.Space, name: str) -> set[str]:
    return {f"{m.param}:{m.dim}" for m in space.group(name).members}


def group_with(space: netdiet.Space, member: str) -> netdiet.Group:
    hits = [g for g in space.groups if member in {f"{m.param}:{m.dim}" for m in g.members}]
    assert len(hits) == 1, (member, [g.name for g in hits])
    return hits[0]


def analyse_and_export(model: nn.Module, x: object, ratio: float = 0.5, **kw: object) -> netdiet.Space:
    torch.manual_seed(0)
    model.eval()
    space = netdiet.analyze(model, x, **kw)  # type: ignore[arg-type]
    check_dense(space, model, x)
    for seed in (0, 1):
        check_keep(space, space.sample(ratio if seed == 0 else None, seed=seed), x)
    return space


IMG = torch.randn(2, 3, 8, 8)


class Head(nn.Module):
    def __init__(self, c: int, n: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(c, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ----- convolutions -------------------------------------------------------------------------------
class DepthwiseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 6, 1)
        self.head = Head(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.head(F.relu6(self.pw(F.relu(self.dw(x)))))


def test_depthwise_conv_shares_its_input_group() -> None:
    space = analyse_and_export(DepthwiseNet(), IMG)
    assert kinds(space) == Counter({("channel", 8): 1, ("channel", 6): 1})
    g = group_with(space, "conv1.weight:0")
    assert {
        "dw.weight:0",
        "dw.bias:0",
        "pw.weight:1",
        "bn1.weight:0",
        "bn1.running_mean:0",
        "bn1.running_var:0",
        "bn1.bias:0",
    } <= members(space, g.name)
    slim = space.export({g.name: torch.tensor([0, 5, 7])})
    assert slim.dw.groups == 3 and slim.dw.in_channels == 3 and slim.dw.out_channels == 3
    assert slim.bn1.num_features == 3 and slim.pw.in_channels == 3


class GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gconv = nn.Conv2d(8, 12, 3, padding=1, groups=4)  # 2 in, 3 out per group
        self.head = Head(12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.gconv(F.relu(self.conv1(x)))))


def test_grouped_conv_splits_channels_into_conv_groups_and_per_group_units() -> None:
    space = analyse_and_export(GroupedNet(), IMG)
    # conv groups (4) tie conv1's outputs and gconv's outputs; within a group: 2 inputs, 3 outputs.
    assert kinds(space) == Counter({("channel", 4): 1, ("channel", 2): 1, ("channel", 3): 1})
    by_size = {g.size: g for g in space.groups}
    assert "gconv.weight:0" in members(space, by_size[4].name)
    assert "conv1.weight:0" in members(space, by_size[4].name)
    assert "conv1.weight:0" in members(space, by_size[2].name)
    slim = space.export({by_size[4].name: torch.tensor([1, 3]), by_size[2].name: torch.tensor([1])})
    assert slim.gconv.groups == 2 and slim.gconv.in_channels == 2 and slim.gconv.out_channels == 6
    assert slim.conv1.out_channels == 2
    # The kept conv1 channels are channel 1 of conv groups 1 and 3: original channels 3 and 7.
    assert torch.equal(slim.conv1.weight, space.model.conv1.weight[[3, 7]])


class TransposeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.gup = nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2)
        self.head = Head(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gup(F.relu(self.up(F.relu(self.conv(x))))))


def test_conv_transpose_channels() -> None:
    space = analyse_and_export(TransposeNet(), IMG)
    g8 = group_with(space, "conv.weight:0")
    assert g8.size == 8 and "up.weight:0" in members(space, g8.name)
    # up's outputs feed a conv-transpose with 2 groups: 2 conv groups x 3 channels each.
    assert sorted(g.size for g in space.groups if "up.bias:0" in members(space, g.name)) == [2, 3]
    slim = space.export({g8.name: torch.tensor([2, 4])})
    assert slim.up.in_channels == 2 and slim.up.weight.shape[0] == 2


# ----- normalisation ------------------------------------------------------------------------------
class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.silu(self.gn(self.conv(x))))


def test_group_norm_prunes_whole_norm_groups_only() -> None:
    space = analyse_and_export(GroupNormNet(), IMG)
    assert kinds(space) == Counter({("channel", 4): 1})
    assert any("GroupNorm group" in r for e in space.excluded for r in e.reasons)
    name = space.groups[0].name
    slim = space.export({name: torch.tensor([0, 3])})
    assert slim.gn.num_groups == 2 and slim.gn.num_channels == 4 and slim.conv.out_channels == 4
    assert torch.equal(slim.conv.weight, space.model.conv.weight[[0, 1, 6, 7]])


class HFStyleRMSNorm(nn.Module):
    """The transformers pattern: statistics written out with pow/mean/rsqrt in a class named *RMSNorm."""

    def __init__(self, n: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(n) + 0.5)
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "hf_rmsnorm"])
def test_last_dim_norms_make_a_prunable_hidden_group(norm: str) -> None:
    make = {
        "layernorm": lambda: nn.LayerNorm(16),
        "rmsnorm": lambda: nn.RMSNorm(16),
        "hf_rmsnorm": lambda: HFStyleRMSNorm(16),
    }[norm]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(6, 16)
            self.norm = make()
            self.mlp = nn.Sequential(nn.Linear(16, 24), nn.GELU(), nn.Linear(24, 16))
            self.out = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            h = h + self.mlp(self.norm(h))
            return self.out(h)

    x = torch.randn(2, 5, 6)
    space = analyse_and_export(Net(), x)
    assert kinds(space) == Counter({("hidden", 16): 1, ("neuron", 24): 1})
    hidden = space.group("hidden")
    assert "norm.weight:0" in members(space, hidden.name)
    assert {"inp.weight:0", "mlp.2.weight:0", "out.weight:1"} <= members(space, hidden.name)
    slim = space.export({"hidden": torch.arange(0, 16, 3)})
    if norm == "layernorm":
        assert slim.norm.normalized_shape == (6,)
    # Statistics over the kept units only: the slim model runs with other batch/sequence sizes too.
    netdiet.verify(space.mask({"hidden": torch.arange(0, 16, 3)}), slim, torch.randn(3, 7, 6))


def test_layernorm_over_two_dims_is_not_prunable() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.ln = nn.LayerNorm([4, 8, 8])
            self.head = Head(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.ln(self.conv(x)))

    space = netdiet.analyze(Net().eval(), IMG)
    assert not [g for g in space.groups if g.size == 4]


# ----- residuals, concat, split, reshape ------------------------------------------------------------
class ResidualNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1 = nn.Conv2d(8, 5, 3, padding=1)
        self.a2 = nn.Conv2d(5, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 7, 1)
        self.b2 = nn.Conv2d(7, 8, 1)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = x + self.a2(F.relu(self.a1(x)))
        x = F.relu(x + self.b2(F.relu(self.b1(x))))
        return self.head(x)


def test_residual_adds_share_one_group() -> None:
    space = analyse_and_export(ResidualNet(), IMG)
    assert kinds(space) == Counter({("channel", 8): 1, ("channel", 5): 1, ("channel", 7): 1})
    stream = group_with(space, "stem.weight:0")
    assert {"a2.weight:0", "b2.weight:0", "a1.weight:1", "b1.weight:1", "head.fc.weight:1"} <= members(
        space, stream.name
    )


class ConcatSplitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.glu = nn.Conv2d(10, 8, 1)
        self.c = nn.Conv2d(4, 6, 1)
        self.head = Head(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)
        p, q = self.glu(y).chunk(2, dim=1)
        return self.head(self.c(p * torch.sigmoid(q)))


def test_concat_and_chunk_offsets() -> None:
    space = analyse_and_export(ConcatSplitNet(), IMG)
    ga, gb = group_with(space, "a.weight:0"), group_with(space, "b.weight:0")
    assert (ga.size, gb.size) == (4, 6)
    assert "glu.weight:1" in members(space, ga.name) and "glu.weight:1" in members(space, gb.name)
    # chunk(2) then p * sigmoid(q): both halves of glu's outputs are the same 4 units.
    glu = group_with(space, "glu.weight:0")
    assert glu.size == 4 and "c.weight:1" in members(space, glu.name)
    slim = space.export({glu.name: torch.tensor([0, 3])})
    assert torch.equal(slim.glu.weight, space.model.glu.weight[[0, 3, 4, 7]])
    keep = {ga.name: torch.tensor([1, 2]), gb.name: torch.tensor([0, 5])}
    slim = space.export(keep)
    assert slim.glu.in_channels == 4
    assert torch.equal(slim.glu.weight, space.model.glu.weight[:, [1, 2, 4, 9]])


class FlattenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)  # -> 4 x 4 x 4
        self.fc1 = nn.Linear(4 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(torch.flatten(F.relu(self.conv(x)), 1))))


def test_flatten_linear_one_channel_is_h_times_w_features() -> None:
    space = analyse_and_export(FlattenNet(), IMG)
    assert kinds(space) == Counter({("channel", 4): 1, ("neuron", 6): 1})
    g = group_with(space, "conv.weight:0")
    assert "fc1.weight:1" in members(space, g.name)
    slim = space.export({g.name: torch.tensor([1, 3])})
    assert slim.fc1.in_features == 2 * 16
    cols = torch.cat([torch.arange(16, 32), torch.arange(48, 64)])
    assert torch.equal(slim.fc1.weight, space.model.fc1.weight[:, cols])


class ShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 4, 1, groups=2)
        self.head = Head(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)  # channel shuffle
        return self.head(self.conv2(x))


def test_channel_shuffle_keeps_units_consistent() -> None:
    model = ShuffleNet().eval()
    space = netdiet.analyze(model, IMG)
    check_dense(space, model, IMG)
    # conv1's 8 channels = 2 (shuffle groups: the literal 2 in view) x 2 x 2; after the shuffle they
    # meet conv2's 2 conv groups, so each factor is its own unit, in both orders.
    shuffled = {g.name: g for g in space.groups if "conv1.weight:0" in members(space, g.name)}
    assert sorted(shuffled) == ["conv1.out[0]", "conv1.out[1]", "conv1.out[2]"]
    assert all(g.size == 2 and g.kind == "channel" for g in shuffled.values())
    assert "conv2.weight:0" in members(space, "conv1.out[1]")  # conv2's conv groups
    for name in ("conv1.out[1]", "conv1.out[2]"):
        check_keep(space, {name: torch.tensor([1])}, IMG)
    # Dropping a shuffle group changes what the literal `2` in forward() means: export catches it.
    with pytest.raises(netdiet.VerificationError, match="hard-co"):
        space.export({"conv1.out[0]": torch.tensor([0])})


class SENet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Conv2d(8, 2, 1)
        self.fc2 = nn.Conv2d(2, 8, 1)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.head(F.max_pool2d(x * s, 2))


def test_squeeze_excitation_ties_gate_to_channels() -> None:
    space = analyse_and_export(SENet(), IMG)
    assert kinds(space) == Counter({("channel", 8): 1, ("channel", 2): 1})
    g = group_with(space, "conv.weight:0")
    assert {"fc1.weight:1", "fc2.weight:0", "fc2.bias:0", "head.fc.weight:1"} <= members(space, g.name)


def test_embedding_dim_is_hidden_and_vocabulary_is_kept() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.fc = nn.Linear(8, 3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.fc(self.emb(ids))

    ids = torch.randint(0, 20, (2, 5))
    space = analyse_and_export(Net(), ids)
    assert kinds(space) == Counter({("hidden", 8): 1})
    assert any("vocabulary" in r for e in space.excluded for r in e.reasons)
    slim = space.export({"hidden": torch.tensor([0, 4])})
    assert slim.emb.embedding_dim == 2 and slim.emb.num_embeddings == 20


# ----- attention ----------------------------------------------------------------------------------
class SDPAAttention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 4, kv_heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, heads * self.head_dim)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim)
        self.proj = nn.Linear(heads * self.head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, self.num_kv_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        gqa = self.num_heads != self.num_kv_heads
        o = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        return self.proj(o.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.attn = attn
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.attn(h)
        h = h + self.mlp(h)
        return self.out(h)


SEQ = torch.randn(2, 5, 6)


def test_plain_sdpa_heads_and_mlp_neurons() -> None:
    space = analyse_and_export(Block(SDPAAttention()), SEQ)
    assert kinds(space)[("head", 4)] == 1 and kinds(space)[("neuron", 32)] == 1
    heads = space.group("attn.heads")
    assert {"attn.q.weight:0", "attn.proj.weight:1"} <= members(space, heads.name)
    assert any("head_dim" in r for e in space.excluded for r in e.reasons)
    slim = space.export({"attn.heads": torch.tensor([1, 2])})
    assert slim.attn.num_heads == 2 and slim.attn.q.out_features == 8 and slim.attn.kv.out_features == 16
    netdiet.verify(space.mask({"attn.heads": torch.tensor([1, 2])}), slim, torch.randn(1, 9, 6))


def test_grouped_query_attention_keeps_ratio_and_head_dim() -> None:
    space = analyse_and_export(Block(SDPAAttention(heads=4, kv_heads=2)), SEQ)
    kv = [g for g in space.groups if g.kind == "kv_head"]
    assert len(kv) == 1 and kv[0].size == 2 and "2 query heads" in kv[0].note
    assert not [g for g in space.groups if g.kind == "head"]
    slim = space.export({kv[0].name: torch.tensor([1])})
    assert slim.attn.num_heads == 2 and slim.attn.num_kv_heads == 1 and slim.attn.head_dim == 4
    # Query heads 2, 3 go with kv head 1.
    assert torch.equal(slim.attn.q.weight, space.model.attn.q.weight[8:16])


@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_multihead_attention(batch_first: bool) -> None:
    class MHA(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(16, 4, batch_first=batch_first)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not batch_first:
                x = x.transpose(0, 1)
            y = self.mha(x, x, x, need_weights=False)[0]
            return y if batch_first else y.transpose(0, 1)

    space = analyse_and_export(Block(MHA()), SEQ)
    heads = [g for g in space.groups if g.kind == "head"]
    assert len(heads) == 1 and heads[0].size == 4
    assert "attn.mha.in_proj_weight:0" in members(space, heads[0].name)
    slim = space.export({heads[0].name: torch.tensor([0, 3])})
    assert slim.attn.mha.num_heads == 2 and slim.attn.mha.head_dim == 4


# ----- what must not shrink -----------------------------------------------------------------------
def test_model_inputs_and_outputs_are_excluded() -> None:
    space = netdiet.analyze(DepthwiseNet().eval(), IMG)
    reasons = {r for e in space.excluded for r in e.reasons}
    assert "model input" in reasons and "model output" in reasons
    assert not any("head.fc.weight:0" in members(space, g.name) for g in space.groups)
    assert not any("conv1.weight:1" in members(space, g.name) for g in space.groups)


@pytest.mark.parametrize("how", ["path", "glob", "module", "type"])
def test_user_exclusion(how: str) -> None:
    model = ResidualNet().eval()
    spec = {"path": "a1", "glob": "a*", "module": model.a1, "type": None}[how]
    if how == "type":
        model.a1 = nn.Conv2d(8, 5, 3, padding=1, padding_mode="zeros", bias=False)

        class Special(nn.Conv2d):
            pass

        special = Special(8, 5, 3, padding=1)
        model.a1 = special
        spec = Special
    space = netdiet.analyze(model, IMG, exclude=(spec,))
    assert ("channel", 5) not in kinds(space)
    assert any("excluded by the user" in r for e in space.excluded for r in e.reasons)
    name = next(e.name for e in space.excluded if e.size == 5)
    with pytest.raises(netdiet.InvalidKeepError, match="cannot shrink"):
        space.validate({name: [0, 1]})
    check_keep(space, space.sample(0.5), IMG)


# ----- quantiser wrappers -------------------------------------------------------------------------
class FakeQuantConv(nn.Module):
    """A QAT wrapper: per-channel fake-quant of the weight with learnable scales."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.scale = nn.Parameter(conv.weight.detach().abs().amax(dim=(1, 2, 3)) / 127 + 1e-3)
        self.register_buffer("zero_point", torch.zeros(conv.out_channels, dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.fake_quantize_per_channel_affine(
            self.conv.weight, self.scale, self.zero_point, 0, -128, 127
        )
        return F.conv2d(x, w, self.conv.bias, self.conv.stride, self.conv.padding, groups=self.conv.groups)


class RoundSTELinear(nn.Module):
    """A QAT wrapper: round with a straight-through estimator and a per-output-channel scale."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.scale = nn.Parameter(linear.weight.detach().abs().amax(dim=1, keepdim=True) / 7 + 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight / self.scale
        w = (w + (torch.round(w) - w).detach()).clamp(-8, 7) * self.scale
        return F.linear(x, w, self.linear.bias)


def _quantise(model: nn.Module) -> nn.Module:
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d):
            setattr(model, name, FakeQuantConv(child))
        elif isinstance(child, nn.Linear):
            setattr(model, name, RoundSTELinear(child))
        else:
            _quantise(child)
    return model


@pytest.mark.parametrize("make", [DepthwiseNet, ResidualNet, SENet, FlattenNet])
def test_quantiser_wrappers_leave_groups_unchanged(make: type[nn.Module]) -> None:
    torch.manual_seed(0)
    plain = netdiet.analyze(make().eval(), IMG)
    torch.manual_seed(0)
    wrapped = make().eval()
    _quantise(wrapped)
    space = netdiet.analyze(wrapped, IMG)
    assert kinds(space) == kinds(plain)
    scales = [n for n, _ in wrapped.named_parameters() if n.endswith("scale")]
    in_groups = {m.param for g in space.groups for m in g.members}
    assert any(s in in_groups for s in scales), "per-channel scales shrink with their channels"
    check_keep(space, space.sample(0.5, seed=2), IMG)
