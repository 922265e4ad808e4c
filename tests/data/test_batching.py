"""Tensor augmentation, sharding across ranks and loader determinism."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from netdiet.data import AugmentConfig, ImageLoader, load_digits, random_crop_flip, shard_bounds


@given(st.integers(1, 300), st.integers(1, 8))
def test_shards_partition_the_batch(batch: int, world: int) -> None:
    bounds = [shard_bounds(batch, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_crop_is_a_shift_of_the_padded_image() -> None:
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    out = random_crop_flip(x, AugmentConfig(pad=2, flip=False), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(padded[b, :, dy : dy + 6, dx : dx + 6], out[b])
        ]
        assert len(hits) == 1


def test_flip_only_mirrors() -> None:
    x = torch.randn(64, 1, 4, 4)
    out = random_crop_flip(x, AugmentConfig(pad=0, flip=True), torch.Generator().manual_seed(1))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0 < int(mirrored.sum()) < 64


def _loader(rank: int = 0, world: int = 1) -> ImageLoader:
    d = load_digits(image_size=8)["train"]
    return ImageLoader(
        d, 32, mean=(0.3,) * 3, std=(0.4,) * 3, shuffle=True, augment=AugmentConfig(), seed=3,
        rank=rank, world_size=world, drop_last=True,
    )  # fmt: skip


def test_ranks_together_see_exactly_the_single_process_batches() -> None:
    single = _loader()
    single.set_epoch(2)
    parts = [_loader(r, 2) for r in range(2)]
    for p in parts:
        p.set_epoch(2)
    for whole, a, b in zip(single, *parts, strict=True):
        torch.testing.assert_close(torch.cat([a.inputs[0], b.inputs[0]]), whole.inputs[0])
        assert torch.equal(torch.cat([a.target, b.target]), whole.target)


def test_epochs_shuffle_differently_but_reproducibly() -> None:
    loader = _loader()
    loader.set_epoch(0)
    e0 = next(iter(loader)).target
    loader.set_epoch(1)
    e1 = next(iter(loader)).target
    loader.set_epoch(0)
    assert torch.equal(next(iter(loader)).target, e0)
    assert not torch.equal(e0, e1)
