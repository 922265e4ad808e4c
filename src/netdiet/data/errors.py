"""The data error: always names the file (and line, where there is one) so a user can fix the input."""

from __future__ import annotations

from pathlib import Path

from netdiet.errors import NetdietError


class DataError(NetdietError, ValueError):
    """Bad or missing data: wrong layout, undecodable image, malformed row, label out of range."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = None if path is None else str(path)
        self.line = line
