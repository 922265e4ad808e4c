"""prepare_quantized: folded, quantized, calibrated copy; output quantizers exactly where int8 kernels need them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.quant import fold_batchnorm, output_quantizer_sites, prepare_quantized, quantized_layers
from netdiet.zoo.resnet_cifar import ResNetCifarConfig, build_resnet_cifar


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_resnet_cifar(ResNetCifarConfig(depth=8, widths=(4, 8, 8), num_classes=5)).eval()


def batches(n: int = 3) -> list[torch.Tensor]:
    return [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(n)]


def test_output_quantizers_go_where_a_conv_feeds_an_add_and_never_on_a_conv_read_by_a_conv() -> None:
    m, _ = fold_batchnorm(tiny_resnet(), (torch.randn(1, 3, 16, 16),))
    layers = [p for p, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    sites = set(output_quantizer_sites(m, (torch.randn(1, 3, 16, 16),), layers))
    first_convs = {p for p in layers if p.endswith(".conv1")}
    second_convs = {p for p in layers if p.endswith(".conv2")}
    assert second_convs and second_convs <= sites  # they feed the residual add
    assert not (first_convs & sites)  # conv1 -> relu -> conv2: conv2's input grid is its output grid
    classifier = [p for p, mod in m.named_modules() if isinstance(mod, nn.Linear)]
    assert classifier and not (set(classifier) & sites)  # model outputs stay float
    assert "conv1" in sites  # the stem feeds both the first block and its residual add


def test_prepare_quantized_leaves_the_model_alone_and_calibrates_every_quantizer() -> None:
    m = tiny_resnet()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    q, plan = prepare_quantized(m, (torch.randn(1, 3, 16, 16),), batches())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in q.modules())  # folded
    layers = quantized_layers(q)
    assert layers and all(ql.weight_bits == 8 and ql.act_bits == 8 for ql in layers.values())
    assert all(ql.input_scale is not None and ql.input_scale > 0 for ql in layers.values())
    with_outputs = [ql for ql in layers.values() if ql.output_scale is not None]
    assert with_outputs and all(ql.output_scale > 0 for ql in with_outputs)
    assert all(0 <= (ql.output_zero_point or 0) <= 255 for ql in with_outputs)
    with torch.no_grad():
        dense, fake = m(batches()[0]), q(batches()[0])
    assert torch.isfinite(fake).all()
    assert (fake - dense).abs().max() <= 0.2 * dense.abs().max()  # 8 bits stays close to float


def test_prepare_quantized_names_unknown_layers() -> None:
    with pytest.raises(ConfigError, match="no such layers"):
        prepare_quantized(tiny_resnet(), (torch.randn(1, 3, 16, 16),), batches(), bits={"nope": (8, 8)})


def test_a_fake_quantized_model_is_captured_like_the_float_one_and_its_plan_rebuilds_it() -> None:
    import netdiet
    from netdiet.quant import QuantPlan, apply_plan

    m = tiny_resnet()
    x = torch.randn(1, 3, 16, 16)
    q, plan = prepare_quantized(m, (x,), batches())
    assert len(netdiet.analyze(q, (x,)).groups) == len(
        netdiet.analyze(m, (x,)).groups
    )  # no data-dependent branch
    again = QuantPlan.from_json(plan.to_json())
    assert again == plan
    rebuilt = apply_plan(tiny_resnet(), again)
    rebuilt.load_state_dict(q.state_dict())
    y = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(y), q(y))


def test_folding_with_a_kept_scale_computes_the_same_and_trains_the_unfolded_weight() -> None:
    m = tiny_resnet()
    with torch.no_grad():  # BN statistics far from identity, so the fold matters
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_var.uniform_(0.2, 4.0)
                mod.weight.uniform_(0.3, 2.0)
    x = torch.randn(2, 3, 16, 16)
    plain, pairs = fold_batchnorm(m, (x[:1],))
    kept, same_pairs = fold_batchnorm(m, (x[:1],), keep_scale=True)
    assert pairs == same_pairs and pairs
    with torch.no_grad():
        assert torch.allclose(plain(x), m(x), atol=1e-4) and torch.allclose(kept(x), m(x), atol=1e-4)
    conv = pairs[0][0]
    unfolded = kept.get_submodule(conv).parametrizations.weight.original
    assert torch.equal(unfolded, m.get_submodule(conv).weight)  # the trained tensor is the BN model's weight
