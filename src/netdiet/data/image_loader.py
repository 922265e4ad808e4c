"""Batches of images from in-memory uint8 arrays: shuffle, shard across ranks, augment, normalise.

Replaces a torch DataLoader for data that fits in memory (CIFAR-10 is 150 MB as uint8): no worker
processes, no per-image Python, and the global batch order depends only on (seed, epoch), so a
data-parallel run reproduces a single-process run batch for batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from netdiet.data.arrays import ImageArrays
from netdiet.data.augment import AugmentConfig, random_crop_flip, to_float_normalized
from netdiet.data.batch import Batch, EpochBatches, shard_bounds


class ImageLoader(EpochBatches):
    """Iterates (B, C, H, W) float batches; `batch_size` is the global batch across all ranks."""

    def __init__(
        self,
        data: ImageArrays,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        augment: AugmentConfig | None = None,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if batch_size < world_size:
            raise ValueError(f"global batch_size {batch_size} is smaller than world_size {world_size}")
        if len(mean) != data.images.shape[3] or len(std) != data.images.shape[3]:
            raise ValueError(f"mean/std need {data.images.shape[3]} entries, got {len(mean)}/{len(std)}")
        self.images = torch.from_numpy(np.require(data.images, requirements=["C", "W"]))
        self.labels = torch.from_numpy(np.require(data.labels, requirements=["C", "W"]))
        self.classes = data.classes
        self.batch_size = batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_examples = len(data)
        self.epoch = 0

    def __iter__(self) -> Iterator[Batch]:
        order = self.epoch_order()
        gen = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch + 1)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = to_float_normalized(self.images[idx], self.mean, self.std)
            if self.augment is not None:
                x = random_crop_flip(x, self.augment, gen)  # drawn for the global batch, then sharded
                # the un-augmented path is channels_last already (a permuted NHWC array); keep one layout,
                # which oneDNN also runs faster (ResNet-20 on CPU: ~0.33 s vs ~0.54 s per batch of 128)
                x = x.contiguous(memory_format=torch.channels_last)
            lo, hi = shard_bounds(len(idx), self.rank, self.world_size)
            yield Batch((x[lo:hi],), self.labels[idx][lo:hi])
