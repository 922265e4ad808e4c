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
    assert sorted(f.name for f in tmp_path.iterdir()) == ["slim.onnx"]  # one file, nothing left over
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    path = path.rename(alone / "moved.onnx")  # self-contained: copied alone, it still loads
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


def test_large_models_keep_weights_in_a_fixed_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import netdiet.export.onnx as onnx_export

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1000)  # as if the model were over 1.8 GB
    path = to_onnx(model, (torch.randn(2, 64),), tmp_path / "big.onnx")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 10**12)
    to_onnx(model, (torch.randn(2, 64),), path)  # re-export as one file: the stale data file goes
    assert sorted(f.name for f in tmp_path.iterdir()) == ["big.onnx"]
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_export_refuses_keyword_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="positional"):
        to_onnx(torch.nn.Linear(2, 2), {"x": torch.randn(1, 2)}, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
