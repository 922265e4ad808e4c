"""Shared helpers for zoo configs: validation that fails with a message naming the field."""

from __future__ import annotations


def require_positive(owner: str, **values: int | float) -> None:
    """Raise ValueError naming the first non-positive field, so a bad override is caught at build time."""
    for key, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{key} must be > 0, got {value!r}")
