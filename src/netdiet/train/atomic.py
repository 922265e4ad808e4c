"""Atomic writes live in `netdiet.atomic` (every stage uses them); re-exported for the trainer's callers."""

from netdiet.atomic import atomic_write, atomic_write_json, atomic_write_text

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_text"]
