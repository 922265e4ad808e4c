"""Decoded image data held as uint8 arrays, and the held-out split taken from the training part."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdiet.data.errors import DataError


@dataclass
class ImageArrays:
    """Images as uint8 (N, H, W, C) and labels as int64 (N,), with the class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"labels shape {self.labels.shape} does not match {self.images.shape[0]} images")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(
                f"label out of range: labels span [{self.labels.min()}, {self.labels.max()}] "
                f"but there are {len(self.classes)} classes"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: np.ndarray | slice) -> ImageArrays:
        """A subset (copies nothing for slices)."""
        return ImageArrays(self.images[index], self.labels[index], self.classes)


SPLIT_SEED = 0  # fixed, independent of the run seed, so every run holds out the same examples


def split_train(
    data: ImageArrays, val_size: int, subset: int | None = None
) -> tuple[ImageArrays, ImageArrays]:
    """(train, val): a fixed shuffle of the training split; the first `val_size` are held out for
    validation, and `subset` keeps only the first N of the rest.

    The shuffle matters because ImageFolder sources are sorted by class. Model selection and per-epoch
    diagnostics use `val`, never the test split; `val` does not depend on `subset`.
    """
    if not 0 <= val_size < len(data):
        raise ValueError(f"val_size must be in [0, {len(data)}), got {val_size}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(data))
    train_idx = order[val_size:]
    if subset is not None:
        if subset <= 0:
            raise ValueError(f"subset must be > 0, got {subset}")
        train_idx = train_idx[:subset]
    return data.take(np.sort(train_idx)), data.take(np.sort(order[:val_size]))


def channel_stats(data: ImageArrays, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, computed in chunks to keep memory flat."""
    c = data.images.shape[3]
    total, sq, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(data), chunk):
        x = np.asarray(data.images[i : i + chunk], dtype=np.float64).reshape(-1, c) / 255.0
        total += x.sum(0)
        sq += (x * x).sum(0)
        n += x.shape[0]
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean**2, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
