"""scikit-learn's digits (1,797 real 8x8 handwritten digits), for the demo and fast tests.

It ships inside scikit-learn, so it needs no download and no files outside the installed packages.
Images are upscaled (nearest) to `image_size` and repeated to 3 channels by default so every image
model in the zoo accepts them unchanged.
"""

from __future__ import annotations

import numpy as np

from netdiet.data.arrays import ImageArrays
from netdiet.data.errors import DataError

DIGITS_TEST_SIZE = 297  # the last 297 examples: a fixed test split, 1,500 left for train


def load_digits(image_size: int = 32, channels: int = 3) -> dict[str, ImageArrays]:
    """{"train": 1,500, "test": 297} uint8 arrays of shape (N, image_size, image_size, channels)."""
    if image_size % 8 != 0 or image_size <= 0:
        raise ValueError(f"image_size must be a positive multiple of 8, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    bunch = sk_load_digits()
    images = np.clip(bunch.images * 16.0, 0, 255).astype(np.uint8)  # values 0..16 -> 0..255
    scale = image_size // 8
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)[..., None].repeat(channels, axis=3)
    labels = bunch.target.astype(np.int64)
    classes = [str(i) for i in range(10)]
    n = len(labels) - DIGITS_TEST_SIZE
    return {
        "train": ImageArrays(images[:n], labels[:n], classes),
        "test": ImageArrays(images[n:], labels[n:], classes),
    }
