"""ImageFolder data (`<root>/<split>/<class>/<image>`) from a directory or a .tar/.tar.gz archive.

Images are decoded once with Pillow into fixed-size uint8 arrays and cached (see `cache.py`); training
then never touches PIL. Works for CIFAR-10 as JPEG and for a user's own ImageNet-layout data.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from netdiet.data.arrays import ImageArrays
from netdiet.data.cache import cached_arrays, default_cache_dir, source_key
from netdiet.data.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".gif", ".tif", ".tiff")
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class ImageFolderConfig:
    """`image_size`: side of the stored square images; larger images are resized (shorter side to
    `resize_to`, default image_size * 8/7) and centre-cropped, as in ImageNet evaluation."""

    image_size: int = 32
    resize_to: int | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise ValueError(f"ImageFolderConfig.image_size must be > 0, got {self.image_size}")
        if self.resize_to is not None and self.resize_to < self.image_size:
            raise ValueError(
                f"ImageFolderConfig.resize_to ({self.resize_to}) must be >= image_size ({self.image_size})"
            )


def is_archive(path: Path) -> bool:
    """True for .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz files."""
    name = path.name.lower()
    return path.is_file() and (name.endswith((".tar", ".tgz")) or ".tar." in name)


def _decode(data: bytes, where: str, cfg: ImageFolderConfig) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            img = opened.convert("RGB")
            size = cfg.image_size
            if img.size != (size, size):
                short = cfg.resize_to or round(size * 8 / 7)
                w, h = img.size
                scale = short / min(w, h)
                img = img.resize(
                    (max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR
                )
                w, h = img.size
                left, top = (w - size) // 2, (h - size) // 2
                img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image ({exc})", path=where) from None


def _split_parts(rel: PurePosixPath) -> tuple[str, str] | None:
    """(split, class) for `.../<split>/<class>/<file>`, or None for files that are not images."""
    if rel.suffix.lower() not in IMAGE_EXTENSIONS or len(rel.parts) < 3:
        return None
    if any(p.startswith(".") for p in rel.parts):
        return None
    split, cls = rel.parts[-3], rel.parts[-2]
    return (split, cls) if split in SPLIT_NAMES else None


def _iter_directory(root: Path) -> Iterator[tuple[str, str, str, bytes]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            parts = _split_parts(PurePosixPath(path.relative_to(root).as_posix()))
            if parts is None and path.parent.parent == root and path.suffix.lower() in IMAGE_EXTENSIONS:
                parts = ("train", path.parent.name)  # flat <root>/<class>/<image>: all of it is train
            if parts is not None:
                yield parts[0], parts[1], str(path), path.read_bytes()


def _iter_archive(archive: Path) -> Iterator[tuple[str, str, str, bytes]]:
    try:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                parts = _split_parts(PurePosixPath(member.name))
                if parts is None:
                    continue
                f = tf.extractfile(member)
                if f is None:
                    continue
                yield parts[0], parts[1], f"{archive}:{member.name}", f.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"cannot read archive ({exc})", path=archive) from None


def decode_image_folder(source: Path, cfg: ImageFolderConfig) -> dict[str, np.ndarray]:
    """Decode every image under `source` into arrays `x_<split>`, `y_<split>` and `classes`."""
    items = _iter_archive(source) if is_archive(source) else _iter_directory(source)
    per_split: dict[str, list[tuple[str, np.ndarray]]] = {}
    for split, cls, where, data in items:
        per_split.setdefault(split, []).append((cls, _decode(data, where, cfg)))
    if "train" not in per_split:
        raise DataError(
            "no images found in ImageFolder layout <root>/train/<class>/<image> "
            "(also accepted: <root>/<class>/<image>, and val/ or test/ beside train/)",
            path=source,
        )
    classes = sorted({cls for cls, _ in per_split["train"]})
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, np.ndarray] = {"classes": np.array(classes)}
    for split, entries in per_split.items():
        unknown = sorted({c for c, _ in entries} - set(index))
        if unknown:
            raise DataError(f"split {split!r} has classes not present in train: {unknown}", path=source)
        out[f"x_{split}"] = np.stack([img for _, img in entries])
        out[f"y_{split}"] = np.array([index[c] for c, _ in entries], dtype=np.int64)
    return out


def load_image_folder(source: str | Path, cfg: ImageFolderConfig | None = None) -> dict[str, ImageArrays]:
    """All splits of an ImageFolder tree or archive, decoded once and then read from the cache."""
    cfg = cfg or ImageFolderConfig()
    source = Path(source)
    if not source.exists():
        raise DataError("data path does not exist", path=source)
    stat = source.stat()
    key = source_key(
        "imagefolder", source.resolve(), stat.st_size, stat.st_mtime_ns, cfg.image_size, cfg.resize_to
    )
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    arrays = cached_arrays(
        cache_dir / f"imagefolder-{key}", lambda: _encode_classes(decode_image_folder(source, cfg))
    )
    classes = [str(c) for c in bytes(arrays["classes"]).decode().split("\n")]
    splits = sorted(k[2:] for k in arrays if k.startswith("x_"))
    return {
        s: ImageArrays(np.asarray(arrays[f"x_{s}"]), np.asarray(arrays[f"y_{s}"]), classes) for s in splits
    }


def _encode_classes(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Class names as a uint8 byte array so the cache never needs pickle for strings."""
    names = "\n".join(str(c) for c in arrays["classes"]).encode()
    return {**arrays, "classes": np.frombuffer(names, dtype=np.uint8).copy()}
