"""What every loader yields: positional model inputs and integer targets.

One small type shared by image and text loaders lets the trainer call `model(*batch.inputs)` without
knowing the modality.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Batch:
    """`inputs` are passed positionally to the model; `target` holds class indices."""

    inputs: tuple[torch.Tensor, ...]
    target: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor to `device`."""
        return Batch(
            tuple(t.to(device, non_blocking=non_blocking) for t in self.inputs),
            self.target.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return int(self.target.shape[0])


class Loader(Protocol):
    """A re-iterable source of batches; `set_epoch` makes shuffling and augmentation reproducible."""

    num_examples: int

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


def shard_bounds(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The slice of a global batch that one data-parallel rank takes (contiguous, sizes differ by <= 1)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world_size {world_size}")
    base, extra = divmod(batch_size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle order of one epoch; the same on every rank and after a resume."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


class EpochBatches:
    """The epoch bookkeeping both in-memory loaders share: epoch selection, batch count, shuffle order.

    Subclasses set num_examples, batch_size, shuffle, drop_last, seed and epoch.
    """

    num_examples: int
    batch_size: int
    shuffle: bool
    drop_last: bool
    seed: int
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order (and augmentation randomness) of `epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.num_examples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_order(self) -> torch.Tensor:
        n = self.num_examples
        return epoch_permutation(n, self.seed, self.epoch) if self.shuffle else torch.arange(n)
