"""Entry point of the `netdiet` command: dispatches to one module per sub-command.

Each sub-command module exposes `add_parser(subparsers)` and `run(args) -> int`, so a new command is
one new file plus one line in COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import torch

from netdiet.errors import NetdietError

COMMANDS: tuple[str, ...] = (
    "analyze",
    "train",
    "evaluate",
    "profile",
    "compress",
    "export",
    "report",
    "demo",
)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows each option's default in --help unless its help already says it (or it has none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
            or isinstance(default, list)
            and not default
        ):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netdiet",
        description="Put a PyTorch network on a diet: analyse, train, compress, export, report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"netdiet.cli.{name}")
        module.add_parser(sub)
    for command in sub.choices.values():
        command.formatter_class = DefaultsHelpFormatter
        if not any("--threads" in a.option_strings for a in command._actions):
            command.add_argument(
                "--threads",
                type=int,
                help="CPU threads for torch (default: torch's choice; 1 on a shared machine)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        threads = getattr(args, "threads", None)
        if threads is not None:
            if threads < 1:
                raise NetdietError(f"--threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        return int(args.handler(args) or 0)
    except NetdietError as exc:
        print(f"netdiet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
