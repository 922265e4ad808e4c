"""ONNX export of dense, pruned and factorised models; ONNX Runtime agrees with PyTorch; batch is dynamic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import netdiet
from netdiet import zoo
from netdiet.errors import ConfigError

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from netdiet.export.onnx import onnx_latency, to_onnx  # noqa: E402


@pytest.mark.parametrize("name", ["resnet20", "bert"])
def test_exported_model_round_trips_through_onnx_runtime(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build(name).eval()
    inputs = tuple(zoo.example_inputs(name, batch_size=2))
    space = netdiet.analyze(model, inputs)
    slim = space.export(space.sample(0.5, seed=0))
    path = to_onnx(slim, inputs, tmp_path / "slim.onnx")
    assert path.is_file() and not list(tmp_path.glob(".*.onnx"))  # temp file renamed, nothing left over
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    bigger = tuple(torch.cat([t, t, t]) for t in inputs)  # batch 6: the batch dimension is dynamic
    got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), bigger)})[0]
    with torch.no_grad():
        expected = slim(*bigger)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)
    assert onnx_latency(path, inputs, repeats=3, warmup=1) > 0


def test_factorised_layers_export_to_onnx(tmp_path: Path) -> None:
    from netdiet.export.lowrank import factorize

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    factorize(model, {"0": 4})
    to_onnx(model, (torch.randn(3, 16),), tmp_path / "f.onnx")


def test_onnx_export_refuses_keyword_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="positional"):
        to_onnx(torch.nn.Linear(2, 2), {"x": torch.randn(1, 2)}, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
