"""Tiny real data so trainer tests take seconds on 2 CPU cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from netdiet.data import DataBundle, DataSpec, build_data


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: on 2 shared cores, 2 OpenMP threads per process stall (seconds per tiny step)
    whenever other processes compete; the tests are about correctness, not speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits8() -> DataBundle:
    """scikit-learn digits at 8x8 (no crop/flip: 4-pixel shifts would erase an 8x8 digit), 1000 train."""
    spec = DataSpec(
        "digits", image_size=8, subset=1000, val_size=150, batch_size=50, eval_batch_size=150, augment=False
    )
    return build_data(spec)
