"""What every sub-command shares: --threads, help for every option, defaults shown in --help."""

from __future__ import annotations

import argparse

import pytest
import torch

from netdiet.cli.main import COMMANDS, build_parser, main

NAMES = [c if c != "evaluate" else "eval" for c in COMMANDS]


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", NAMES)
def test_every_command_takes_threads_and_shows_its_defaults(name: str) -> None:
    command = commands()[name]
    text = command.format_help()
    assert "--threads" in text
    options = text.split("options:")[1]
    for action in command._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{name} {action.option_strings} has no help"
        if action.default not in (None, False, []):
            flag = action.option_strings[-1]
            block = options[options.index(flag) :].split("\n  -")[0]
            assert "default" in block, f"{name} {flag}: --help does not show its default {action.default!r}"


def test_threads_below_one_is_refused_and_a_valid_value_is_applied(capsys) -> None:
    assert main(["analyze", "resnet20", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    before = torch.get_num_threads()
    try:
        assert main(["analyze", "resnet20", "--threads", "1", "--json"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
