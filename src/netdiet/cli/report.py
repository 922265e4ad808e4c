"""`netdiet report RUN_DIR [RUN_DIR ...]`: markdown report with plots from compression runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from netdiet.report.markdown import write_report


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write a markdown report (tables and plots) from compression run directories",
        description="Collect report.json from each RUN_DIR (or its subdirectories) and write report.md with "
        "the before/after table, kept widths per group and accuracy against FLOPs.",
    )
    p.add_argument("runs", nargs="+", help="directories written by `netdiet compress --out`")
    p.add_argument("--out", default=None, help="output directory (default: the first RUN_DIR)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.runs[0])
    path = write_report(args.runs, out)
    print(f"netdiet report: wrote {path}")
    return 0
