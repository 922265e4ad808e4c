"""int8 QDQ ONNX with learned scales: ONNX Runtime runs it as int8 kernels, within a step of the fake-quant model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import netdiet
from netdiet.errors import ConfigError
from netdiet.export.int8 import to_onnx_dynamic_int8, to_onnx_int4_weights, to_onnx_int8
from netdiet.export.onnx import to_onnx
from netdiet.quant import (
    attach_quantizers,
    calibrate_activations,
    output_quantizer_sites,
    prepare_quantized,
    quantized_layers,
)
from netdiet.zoo.resnet_cifar import ResNetCifarConfig, build_resnet_cifar

ort = pytest.importorskip("onnxruntime")


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


def batches(n: int = 4, size: int = 16) -> list[torch.Tensor]:
    return [torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(n)]


def one_step_bound(qmodel: nn.Module, last: str) -> float:
    """The output change if every input of the final layer moved by one quantization step."""
    layer = quantized_layers(qmodel)[last]
    weight = qmodel.get_submodule(last).weight.detach()
    return float(layer.input_scale) * float(weight.abs().sum(1).max())


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_int8_export_carries_the_learned_scales_and_runs_as_int8_kernels(tmp_path) -> None:
    m = plain_cnn()
    bits = {"0": (8, 8), "2": (8, 8), "6": (8, 8)}
    outputs = output_quantizer_sites(m, (torch.randn(1, 3, 16, 16),), bits)
    assert outputs == ["2"]  # conv 0 is read by conv 2; conv 2 by a pooling; 6 is the model output
    attach_quantizers(m, bits, outputs=outputs)
    calibrate_activations(m, batches())
    result = to_onnx_int8(m, (batches()[0][:1],), tmp_path / "q.onnx", batches())
    assert result.path.is_file() and result.layers == 3 and result.qdq_pairs == 7
    assert result.int8_kernels.get("QLinearConv") == 2 and result.int8_kernels.get("QGemm") == 1
    proto = onnx.load(str(result.path))
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    learned = quantized_layers(m)["2"]
    assert any(np.isclose(v, learned.input_scale).all() and v.size == 1 for v in scales.values())
    assert not any(i.name == "2.weight" for i in proto.graph.initializer)  # float weights are gone
    for x in (torch.randn(3, 3, 16, 16), torch.randn(1, 3, 16, 16)):  # dynamic batch
        with torch.no_grad():
            expected = m(x).numpy()
        assert np.abs(run_onnx(result.path, x) - expected).max() <= one_step_bound(m, "6")


def test_int8_export_of_a_residual_cnn_makes_every_conv_an_int8_kernel(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_resnet_cifar(ResNetCifarConfig(depth=8, widths=(4, 8, 8), num_classes=5)).eval()
    q, _ = prepare_quantized(model, (torch.randn(1, 3, 16, 16),), batches())
    result = to_onnx_int8(q, (torch.randn(1, 3, 16, 16),), tmp_path / "r.onnx", batches())
    convs = sum(isinstance(mod, nn.Conv2d) for mod in q.modules())
    assert result.int8_kernels.get("QLinearConv") == convs and result.int8_kernels.get("QGemm") == 1
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = q(x).numpy()
    assert np.abs(run_onnx(result.path, x) - expected).max() <= one_step_bound(q, "fc")


def test_int8_export_refuses_activations_below_8_bits(tmp_path) -> None:
    m = plain_cnn()
    attach_quantizers(m, {"0": (8, 4), "2": (8, 8), "6": (8, 8)})
    calibrate_activations(m, batches())
    with pytest.raises(ConfigError, match="below 8 bits"):
        to_onnx_int8(m, (torch.randn(1, 3, 16, 16),), tmp_path / "q.onnx", batches())
    assert not list(tmp_path.iterdir())


def test_int8_export_of_a_model_without_quantizers_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no quantizers"):
        to_onnx_int8(
            plain_cnn(), (torch.randn(1, 3, 16, 16),), tmp_path / "q.onnx", [torch.randn(2, 3, 16, 16)]
        )
    assert not list(tmp_path.iterdir())


def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    return netdiet.zoo.build("bert", vocab_size=60, hidden=32, intermediate=64, heads=2, dropout=0.0).eval()


def token_batch(batch: int, length: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 60, (batch, length), generator=g)
    return ids, torch.ones(batch, length, dtype=torch.long), torch.zeros(batch, length, dtype=torch.long)


def test_dynamic_int8_runs_a_transformer_on_integer_matmuls_at_any_batch_and_length(tmp_path) -> None:
    model = tiny_bert()
    batches = [token_batch(8, 12, i) for i in range(3)]
    result = to_onnx_dynamic_int8(model, token_batch(1, 12, 9), tmp_path / "b.onnx", batches)
    assert (
        result.int8_kernels.get("MatMulInteger", 0) + result.int8_kernels.get("DynamicQuantizeMatMul", 0) >= 4
    )
    assert result.top1_agreement is not None and result.top1_agreement >= 0.9
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = token_batch(3, 20, 5)  # another batch size and sequence length than the example
    got = session.run(None, {f"input_{i}": t.numpy() for i, t in enumerate(x)})[0]
    with torch.no_grad():
        expected = model(*x).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 0.1 * np.abs(expected).max()


def test_dynamic_int8_refuses_a_fake_quantized_model(tmp_path) -> None:
    m = plain_cnn()
    attach_quantizers(m, {"0": (8, 8)})
    calibrate_activations(m, batches())
    with pytest.raises(ConfigError, match="learned scales"):
        to_onnx_dynamic_int8(m, (torch.randn(1, 3, 16, 16),), tmp_path / "q.onnx", batches())
    assert not list(tmp_path.iterdir())


def test_int4_weight_only_stores_every_matmul_in_4_bits_and_stays_close(tmp_path) -> None:
    model = tiny_bert()
    batches = [token_batch(8, 12, i) for i in range(3)]
    result = to_onnx_int4_weights(model, token_batch(1, 12, 9), tmp_path / "b4.onnx", batches)
    assert result.int8_kernels["MatMulNBits"] >= 4 and result.top1_agreement is not None
    fp32 = to_onnx(model, token_batch(1, 12, 9), tmp_path / "b.onnx")
    assert result.path.stat().st_size < fp32.stat().st_size
    with pytest.raises(ConfigError, match="power of two"):
        to_onnx_int4_weights(model, token_batch(1, 12, 9), tmp_path / "x.onnx", batches, block_size=24)
