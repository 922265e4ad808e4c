"""CIFAR-10 from whichever form the user has: the official python batches, an ImageFolder tree, or a
.tar/.tar.gz of one (such as ../shared/data/cifar10-jpg.tar.gz)."""

from __future__ import annotations

from pathlib import Path

from netdiet.data.arrays import ImageArrays
from netdiet.data.cifar_pickle import is_cifar_pickle_dir, load_cifar10_pickle
from netdiet.data.errors import DataError
from netdiet.data.image_folder import ImageFolderConfig, is_archive, load_image_folder

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
ARCHIVE_NAMES = ("cifar10-jpg.tar.gz", "cifar10-jpg.tgz", "cifar10-jpg.tar")


def resolve_cifar10_source(data_dir: str | Path) -> Path:
    """Find the CIFAR-10 data under `data_dir` (the file/dir itself, or a known name inside it)."""
    root = Path(data_dir)
    if not root.exists():
        raise DataError("CIFAR-10 data path does not exist", path=root)
    if is_archive(root) or is_cifar_pickle_dir(root) or (root / "train").is_dir():
        return root
    for name in ("cifar-10-batches-py", *ARCHIVE_NAMES):
        if (root / name).exists():
            return root / name
    raise DataError(
        "no CIFAR-10 data found: expected cifar-10-batches-py/, an ImageFolder tree with train/ and test/, "
        f"or one of {', '.join(ARCHIVE_NAMES)}",
        path=root,
    )


def load_cifar10(data_dir: str | Path, cache_dir: str | Path | None = None) -> dict[str, ImageArrays]:
    """{"train": 50,000 images, "test": 10,000 images} as uint8 arrays (cached after the first call)."""
    source = resolve_cifar10_source(data_dir)
    if source.is_dir() and is_cifar_pickle_dir(source):
        splits = load_cifar10_pickle(source)
    else:
        cfg = ImageFolderConfig(image_size=32, cache_dir=Path(cache_dir) if cache_dir else None)
        splits = load_image_folder(source, cfg)
    if "test" not in splits:
        raise DataError("CIFAR-10 data has no test split (expected test/<class>/...)", path=source)
    if splits["train"].classes != list(CIFAR10_CLASSES):
        raise DataError(f"classes {splits['train'].classes} are not the CIFAR-10 classes", path=source)
    return splits
