"""A directory of named uint8/int64 arrays with a checksummed manifest, written atomically.

Decoding 60,000 JPEGs takes tens of seconds; doing it once and memory-mapping the result afterwards
makes every later run start instantly. The manifest is written last and records each array's shape,
dtype and sha256, so a partial or corrupt cache is detected and rebuilt instead of silently used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """`$NETDIET_CACHE_DIR`, else `~/.cache/netdiet`."""
    env = os.environ.get("NETDIET_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "netdiet"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def source_key(*parts: object) -> str:
    """A short stable key for a cache entry from the things that determine its content."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def load_cached(entry: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a valid cache entry (memory-mapped), or None if missing, partial or corrupt."""
    manifest_path = entry / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != CACHE_FORMAT:
            return None
        arrays: dict[str, np.ndarray] = {}
        for name, info in manifest["arrays"].items():
            path = entry / f"{name}.npy"
            if _sha256(path) != info["sha256"]:
                return None
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
                return None
            arrays[name] = arr
        return arrays
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_cached(entry: Path, arrays: dict[str, np.ndarray], meta: dict | None = None) -> None:
    """Write arrays to a temporary sibling directory, then rename it into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    try:
        info = {}
        for name, arr in arrays.items():
            path = tmp / f"{name}.npy"
            np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
            info[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": _sha256(path)}
        manifest = {"format": CACHE_FORMAT, "arrays": info, "meta": meta or {}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cached_arrays(
    entry: Path, build: Callable[[], dict[str, np.ndarray]], meta: dict | None = None
) -> dict[str, np.ndarray]:
    """Return the cached arrays at `entry`, building (and caching) them first if needed."""
    arrays = load_cached(entry)
    if arrays is not None:
        return arrays
    if entry.exists():
        warnings.warn(f"netdiet: cache {entry} is partial or corrupt; rebuilding it", stacklevel=2)
    save_cached(entry, build(), meta)
    arrays = load_cached(entry)
    if arrays is None:  # pragma: no cover - only if the disk lies to us
        raise OSError(f"cache {entry} could not be read back after writing it")
    return arrays
