"""int8 QDQ ONNX with learned scales: runs in ONNX Runtime as int8 kernels, close to the fake-quant model."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from netdiet.errors import ConfigError
from netdiet.export.int8 import to_onnx_int8
from netdiet.quant import attach_quantizers, calibrate_activations


def plain_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


def test_int8_export_carries_the_learned_scales_and_matches_the_fake_quant_model(tmp_path) -> None:
    m = plain_cnn()
    attach_quantizers(m, {"0": (8, 8), "2": (8, 8), "6": (8, 8)})
    batches = [torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    calibrate_activations(m, batches)
    result = to_onnx_int8(m, (batches[0][:1],), tmp_path / "q.onnx", batches)
    assert result.path.is_file() and result.layers == 3 and result.overridden_tensors == 6
    assert result.max_rel_error <= 0.1
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_export_of_a_model_without_quantizers_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no quantizers"):
        to_onnx_int8(
            plain_cnn(), (torch.randn(1, 3, 16, 16),), tmp_path / "q.onnx", [torch.randn(2, 3, 16, 16)]
        )
    assert not list(tmp_path.iterdir())
