"""Packed quantized weights: codes round-trip at every width, and a saved quantized model is smaller and
loads to identical outputs."""

from __future__ import annotations

import pytest
import torch

import netdiet
from netdiet.errors import ConfigError
from netdiet.quant import prepare_quantized, quantized_layers
from netdiet.quant.pack import pack_codes, unpack_codes
from netdiet.zoo.resnet_cifar import ResNetCifarConfig, build_resnet_cifar


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("numel", [1, 7, 64])
def test_codes_round_trip_and_4_bits_take_half_a_byte(bits: int, numel: int) -> None:
    top = 2 ** (bits - 1) - 1
    codes = torch.randint(-top, top + 1, (numel,), generator=torch.Generator().manual_seed(bits))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == ((numel + 1) // 2 if bits <= 4 else numel)
    assert torch.equal(unpack_codes(packed, bits, numel), codes.to(torch.int16))


def test_codes_off_the_grid_are_refused() -> None:
    with pytest.raises(ConfigError, match="4-bit grid"):
        pack_codes(torch.tensor([8]), 4)


@pytest.mark.parametrize("weight_bits", [8, 4])
def test_a_saved_quantized_model_is_packed_and_loads_to_identical_outputs(tmp_path, weight_bits: int) -> None:
    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_resnet_cifar(ResNetCifarConfig(depth=8, widths=(32, 64, 64), num_classes=5)).eval()

    model = build()
    x = torch.randn(1, 3, 16, 16)
    batches = [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    bits = {
        p: (weight_bits, 8)
        for p, m in model.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    }
    q, plan = prepare_quantized(model, (x,), batches, bits=bits)
    q.netdiet_recipe = {"format": "netdiet.recipe/1", "keep": None, "quant": plan.to_json()}
    netdiet.save(q, tmp_path / "q")
    netdiet.save(model, tmp_path / "f")
    float_bytes = (tmp_path / "f" / "model.safetensors").stat().st_size
    packed_bytes = (tmp_path / "q" / "model.safetensors").stat().st_size
    assert packed_bytes < (0.4 if weight_bits == 8 else 0.3) * float_bytes
    loaded = netdiet.load(tmp_path / "q", build())
    y = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(y), q(y))
    assert {p: ql.weight_bits for p, ql in quantized_layers(loaded).items()} == {p: weight_bits for p in bits}
