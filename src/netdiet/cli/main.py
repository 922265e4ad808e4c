"""Entry point of the `netdiet` command: dispatches to one module per sub-command.

Each sub-command module exposes `add_parser(subparsers)` and `run(args) -> int`, so a new command is
one new file plus one line in COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from netdiet.errors import NetdietError

COMMANDS: tuple[str, ...] = ("analyze", "train", "evaluate", "profile", "compress", "report", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netdiet",
        description="Put a PyTorch network on a diet: analyse, train, compress, export, report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"netdiet.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except NetdietError as exc:
        print(f"netdiet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
