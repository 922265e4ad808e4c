"""CIFAR-10 in the official python format (`cifar-10-batches-py`).

That format is a set of Python pickles; this module is the one place netdiet unpickles, and it does so
only on files with the official names inside that directory, through a restricted unpickler that
refuses every global (the batches hold only dicts, bytes, lists and numpy arrays made of plain types).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from netdiet.data.arrays import ImageArrays
from netdiet.data.errors import DataError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only the numpy reconstruction functions the official batches may reference."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - signature fixed by pickle
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _load_batch(path: Path) -> dict:
    if not path.is_file():
        raise DataError("missing CIFAR-10 batch file", path=path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"not a valid CIFAR-10 python batch ({exc})", path=path) from None


def is_cifar_pickle_dir(path: Path) -> bool:
    """True if `path` looks like the official `cifar-10-batches-py` directory."""
    return (path / TEST_FILES[0]).is_file() or (path / TRAIN_FILES[0]).is_file()


def load_cifar10_pickle(root: Path) -> dict[str, ImageArrays]:
    """The train (50,000) and test (10,000) splits as uint8 NHWC arrays."""
    meta = _load_batch(root / META_FILE)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[b"label_names"]]
    out = {}
    for split, files in (("train", TRAIN_FILES), ("test", TEST_FILES)):
        xs, ys = [], []
        for name in files:
            path = root / name
            batch = _load_batch(path)
            try:
                data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                labels = np.asarray(batch[b"labels"], dtype=np.int64)
            except (KeyError, ValueError) as exc:
                raise DataError(f"unexpected CIFAR-10 batch contents ({exc})", path=path) from None
            if labels.min() < 0 or labels.max() >= len(classes):
                raise DataError(f"label out of range [0, {len(classes)})", path=path)
            xs.append(data.transpose(0, 2, 3, 1))
            ys.append(labels)
        out[split] = ImageArrays(np.concatenate(xs), np.concatenate(ys), classes)
    return out
