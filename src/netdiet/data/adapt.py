"""Use a plain PyTorch DataLoader (yielding (inputs..., target)) wherever netdiet expects a Loader."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from netdiet.data.batch import Batch
from netdiet.errors import ConfigError


class BatchAdapter:
    """Wraps an iterable of `(x, y)` / `(x1, x2, ..., y)` tuples or `{"labels": ..., ...}` dicts.

    The last tuple element (or the "labels"/"label" key) is the target; the rest are positional inputs.
    `set_epoch` is forwarded to a DistributedSampler-style sampler when there is one.
    """

    def __init__(self, source: Iterable[Any]) -> None:
        self.source = source
        self.num_examples = len(getattr(source, "dataset", [])) if hasattr(source, "dataset") else 0

    def __len__(self) -> int:
        try:
            return len(self.source)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(
                "the training data must have a length (a DataLoader over a map-style dataset)"
            ) from exc

    def set_epoch(self, epoch: int) -> None:
        sampler: Any = getattr(self.source, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        for item in self.source:
            yield to_batch(item)


def to_batch(item: Any) -> Batch:
    if isinstance(item, Batch):
        return item
    if isinstance(item, dict):
        key = "labels" if "labels" in item else "label" if "label" in item else None
        if key is None:
            raise ConfigError("a dict batch needs a 'labels' (or 'label') entry holding the targets")
        inputs = tuple(v for k, v in item.items() if k != key and isinstance(v, torch.Tensor))
        return Batch(inputs, item[key])
    if isinstance(item, (tuple, list)) and len(item) >= 2 and all(isinstance(t, torch.Tensor) for t in item):
        return Batch(tuple(item[:-1]), item[-1])
    raise ConfigError(
        f"cannot read a training batch of type {type(item).__name__}: yield (inputs..., target) tensors, "
        "a dict with 'labels', or a netdiet.data.Batch"
    )


def as_loader(data: Any) -> Any:
    """`data` itself if it already yields Batch objects (netdiet loaders), else a BatchAdapter."""
    if hasattr(data, "set_epoch") and hasattr(data, "num_examples"):
        return data
    return BatchAdapter(data)


class SplitBatches:
    """Each batch of `loader` cut into `parts` consecutive smaller batches: the same examples in the
    same order, `parts` times the optimizer steps. A method that learns per step (l1l2's gates) gets the
    steps it needs from a short phase without seeing more data."""

    def __init__(self, loader: Any, parts: int) -> None:
        if parts < 1:
            raise ConfigError(f"SplitBatches needs parts >= 1, got {parts}")
        self.loader = loader
        self.parts = parts
        self.num_examples = getattr(loader, "num_examples", 0)

    def __len__(self) -> int:
        return len(self.loader) * self.parts

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        for item in self.loader:
            batch = to_batch(item)
            n = len(batch)
            for chunk in torch.arange(n).tensor_split(min(self.parts, n)):
                lo, hi = int(chunk[0]), int(chunk[-1]) + 1
                yield Batch(tuple(t[lo:hi] for t in batch.inputs), batch.target[lo:hi])
