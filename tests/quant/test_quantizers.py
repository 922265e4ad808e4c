"""Quantizers: LSQ fake quant, learned bit widths, calibration, BN folding, attach/strip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.quant import (
    LearnedBitQuantizer,
    LSQQuantizer,
    attach_quantizers,
    bits_of_range,
    calibrate_activations,
    fold_batchnorm,
    quantized_layers,
    strip_quantizers,
)


def cnn() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(-1.5, 1.5)
    return m.eval()


def test_lsq_output_lies_on_the_grid_and_gradients_are_finite() -> None:
    q = LSQQuantizer(4, signed=True, channels=3, axis=0)
    w = torch.randn(3, 5, requires_grad=True)
    q.init_from(w, -w.detach().abs().amax(1), w.detach().abs().amax(1))
    y = q(w)
    ints = y.detach() / q.scale()[:, None]
    assert torch.allclose(ints, ints.round(), atol=1e-5) and ints.abs().max() <= 7 + 1e-4
    y.pow(2).sum().backward()
    assert torch.isfinite(w.grad).all() and torch.isfinite(q.step.grad).all() and q.step.grad.abs().sum() > 0


def test_an_uncalibrated_quantizer_is_a_named_error() -> None:
    with pytest.raises(ConfigError, match="calibrate"):
        LSQQuantizer(8, signed=False)(torch.randn(4))


def test_learned_bits_follow_the_formula_and_projection_keeps_them_in_bounds() -> None:
    q = LearnedBitQuantizer(channels=2, axis=0)
    q.init_from(torch.tensor([1.0, 2.0]))
    assert torch.allclose(q.bits(), torch.full((2,), 8.0), atol=1e-5)
    assert float(bits_of_range(torch.tensor(7.0), torch.tensor(1.0))) == pytest.approx(4.0)
    with torch.no_grad():
        q.d.copy_(torch.tensor([1e-4, 1.0]))  # 15+ bits and ~2 bits
    q.project(3.0, 6.0)
    bits = q.bits()
    assert (bits >= 3.0 - 1e-4).all() and (bits <= 6.0 + 1e-4).all()
    x = torch.randn(2, 10, requires_grad=True)
    q(x).sum().backward()
    assert (
        torch.isfinite(x.grad).all() and torch.isfinite(q.d.grad).all() and torch.isfinite(q.q_m.grad).all()
    )


def test_fold_batchnorm_keeps_outputs_and_removes_every_bn() -> None:
    m = cnn()
    x = torch.randn(4, 3, 8, 8)
    folded, pairs = fold_batchnorm(m, (x[:1],))
    assert pairs == [("0", "1"), ("3", "4")]
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in folded.modules())
    assert torch.allclose(folded(x), m(x), atol=1e-5)
    assert any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())  # the input is not modified


def test_attach_calibrate_and_strip_round_trip_leaves_the_quantized_model_intact() -> None:
    m, _ = fold_batchnorm(cnn(), (torch.randn(1, 3, 8, 8),))
    x = torch.randn(16, 3, 8, 8)
    reference = m(x)
    attach_quantizers(m, {"0": (8, 8), "3": (8, 8), "8": (8, 8)})
    assert calibrate_activations(m, [x[:8], x[8:]]) == 3
    y = m(x)
    assert (y - reference).abs().max() / reference.abs().max() < 0.05  # 8 bits: close, not equal
    layers = quantized_layers(m)
    assert set(layers) == {"0", "3", "8"} and layers["3"].weight_scale.shape == (8,)
    assert layers["3"].input_zero_point == 0  # after a ReLU the range starts at zero
    plain, learned = strip_quantizers(m)
    assert set(learned) == set(layers) and not quantized_layers(plain)
    assert torch.allclose(plain(x), reference, atol=1e-5)
    assert torch.equal(m(x), y)  # stripping a copy does not touch the quantized model
