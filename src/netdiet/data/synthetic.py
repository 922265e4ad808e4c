"""Synthetic image data for tests that need shapes, not realism (a learnable class-dependent pattern)."""

from __future__ import annotations

import numpy as np

from netdiet.data.arrays import ImageArrays


def synthetic_images(
    n: int, num_classes: int = 10, image_size: int = 32, channels: int = 3, seed: int = 0
) -> ImageArrays:
    """Noise plus a per-class mean image, so a model can fit it and accuracy means something."""
    if n <= 0 or num_classes <= 0:
        raise ValueError(f"n and num_classes must be > 0, got {n}, {num_classes}")
    rng = np.random.default_rng(seed)
    protos = rng.uniform(0, 255, size=(num_classes, image_size, image_size, channels))
    labels = rng.integers(0, num_classes, size=n)
    noise = rng.normal(0, 40, size=(n, image_size, image_size, channels))
    images = np.clip(protos[labels] + noise, 0, 255).astype(np.uint8)
    return ImageArrays(images, labels.astype(np.int64), [str(i) for i in range(num_classes)])
