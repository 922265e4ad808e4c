"""How much of a layer's cost remains when the residual blocks around it are kept, dropped or relaxed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def block_factor(path: str, blocks: Mapping[str, Any] | None) -> Any:
    """1, or the product of the values of the blocks that contain module `path` (0 where dropped)."""
    factor: Any = 1
    for block, value in (blocks or {}).items():
        if path == block or path.startswith(block + "."):
            factor = factor * value
    return factor
