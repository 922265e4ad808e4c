"""Metrics sinks: one JSON object per line in metrics.jsonl, and TensorBoard when it is installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netdiet.train.atomic import atomic_write_text


class MetricsLogger:
    """Appends records to `<run_dir>/metrics.jsonl`; mirrors numeric fields to TensorBoard if available."""

    def __init__(self, run_dir: str | Path | None, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl" if run_dir is not None else None
        self.tb: Any = None
        if run_dir is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tb = None

    def reset(self, records: list[dict[str, Any]]) -> None:
        """Rewrite the file from `records` (a resumed run restarts from its checkpoint's history)."""
        if self.path is not None:
            atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

    def log(self, record: dict[str, Any], step: int) -> None:
        """Append one record."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
