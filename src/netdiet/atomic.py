"""Atomic file writes: write a temporary file in the same directory, fsync, then rename over the target.

A run killed mid-write leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netdiet.errors import ConfigError


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` and then move the result to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp (and some writers) create 0600; run directories are meant to be read
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Atomically write JSON (indented, so run directories are readable)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class StagedDir:
    """An output folder that holds a complete result or nothing.

    A run writes into a hidden staging folder beside `out` (`.NAME.partial`) and `commit()` renames it
    into place at the very end, so a crash, a Ctrl-C or a failed check never leaves a model without
    its report at `out`, nor a stale file of an earlier run beside a new one. The staging folder is
    also the run's resumable state: `resume=True` continues in it. An existing `out` is refused
    unless `overwrite=True`, which replaces it only when the new result is complete.
    """

    STATE = "state"  # the resumable state inside the staging folder; dropped on commit

    def __init__(self, out: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.out = Path(out)
        self.staging = self.out.parent / f".{self.out.name}.partial"
        self.overwrite = overwrite
        self.resume = resume

    def prepare(self) -> Path:
        """Check what is already there against the flags and return the staging folder to write into."""
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} exists and is not a directory")
        has_result = self.out.is_dir() and any(self.out.iterdir())
        if self.resume:
            if not self.staging.is_dir():
                done = " (it holds a finished result)" if has_result else ""
                raise ConfigError(
                    f"--resume: there is no interrupted run for --out {self.out}{done}; run without --resume"
                )
            return self.staging
        if has_result and not self.overwrite:
            raise ConfigError(
                f"--out {self.out} already holds a result; pass --overwrite to replace it (the old result "
                "stays until the new one is complete) or choose another --out"
            )
        if self.staging.exists():
            if not self.overwrite:
                raise ConfigError(
                    f"an interrupted run for --out {self.out} left its state in {self.staging}; pass --resume "
                    "to continue it or --overwrite to start over"
                )
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        return self.staging

    @property
    def state_dir(self) -> Path:
        return self.staging / self.STATE

    def discard_if_empty(self) -> None:
        """Remove the staging folder when the run left nothing in it worth resuming."""
        if self.staging.is_dir() and not any(f.is_file() for f in self.staging.rglob("*")):
            shutil.rmtree(self.staging)

    def commit(self) -> Path:
        """Move the finished result into place (replacing an old one) and drop the resumable state."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
        os.replace(self.staging, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out
