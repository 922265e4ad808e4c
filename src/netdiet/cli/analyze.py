"""`netdiet analyze MODEL`: print the groups and the per-layer cost table (or JSON for machines)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from torch import nn

from netdiet import zoo
from netdiet.cli.model_source import build_from_factory
from netdiet.errors import NetdietError
from netdiet.space import Space, analyze


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="trace a model and list its prunable groups and per-layer cost",
        description=(
            "Trace MODEL with torch.export, list every group of units that can be removed together "
            "(channels, heads, neurons, hidden), the dimensions that cannot shrink and why, and the "
            "per-layer FLOPs/params. FLOPs count a multiply-add as 2."
        ),
    )
    p.add_argument(
        "model",
        help=f"a zoo model ({', '.join(zoo.names())}) or 'package.module:factory', a callable "
        "returning an nn.Module (then give --input-shape)",
    )
    p.add_argument("--batch", type=int, default=1, help="batch size of the example input (default 1)")
    p.add_argument(
        "--input-shape",
        default=None,
        help="example input shape without batch, e.g. 3,224,224 (required for module:factory; for a zoo model it "
        "replaces the default 3,32,32, or the sequence length of a text model)",
    )
    p.add_argument(
        "--exclude", action="append", default=[], help="module path (glob) that must not shrink; repeatable"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    p.set_defaults(handler=run)


def load_model(spec: str, batch: int, input_shape: str | None) -> tuple[nn.Module, tuple]:
    """A zoo model (at --input-shape if given) or the user's module:factory with its example input."""
    shape = _parse_shape(input_shape) if input_shape is not None else None
    if spec in zoo.names():
        model = zoo.build(spec)
        if shape is None:
            return model, tuple(zoo.example_inputs(spec, batch_size=batch))
        return model, _zoo_inputs_at(spec, model, batch, shape)
    if ":" not in spec:
        raise NetdietError(
            f"unknown model '{spec}': use a zoo name ({', '.join(zoo.names())}) or 'module:factory'"
        )
    model = build_from_factory(spec)
    if shape is None:
        raise NetdietError(
            "--input-shape is required for module:factory models, e.g. --input-shape 3,224,224"
        )
    return model, (torch.randn(batch, *shape),)


def _parse_shape(text: str) -> list[int]:
    try:
        shape = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise NetdietError(f"--input-shape must be comma-separated integers, got '{text}'") from None
    if not shape or any(d <= 0 for d in shape):
        raise NetdietError(f"--input-shape needs positive sizes, got '{text}'")
    return shape


def _zoo_inputs_at(spec: str, model: nn.Module, batch: int, shape: list[int]) -> tuple:
    cfg: Any = getattr(model, "config", None)
    if zoo.entry(spec).input_kind == "tokens":
        if len(shape) != 1 or shape[0] > cfg.max_len:
            raise NetdietError(
                f"--input-shape for {spec} is the sequence length, one number <= max_len {cfg.max_len}; "
                f"got {','.join(map(str, shape))}"
            )
        ids = torch.randint(0, cfg.vocab_size, (batch, shape[0]), generator=torch.Generator().manual_seed(0))
        return (ids, torch.ones_like(ids))
    channels = getattr(cfg, "in_channels", 3)
    if len(shape) != 3 or shape[0] != channels:
        raise NetdietError(
            f"--input-shape for {spec} is channels,height,width with {channels} channels; "
            f"got {','.join(map(str, shape))}"
        )
    return (torch.randn(batch, *shape),)


def summary(space: Space) -> dict[str, Any]:
    report = space.cost()
    return {
        "model": type(space.model).__name__,
        "groups": [g.to_dict() for g in space.groups],
        "excluded": [e.to_dict() for e in space.excluded],
        "cost": report.to_dict(),
        "probe": space.probe.to_dict() if space.probe is not None else None,
    }


def run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise NetdietError(f"--batch must be >= 1, got {args.batch}")
    model, inputs = load_model(args.model, args.batch, args.input_shape)
    space = analyze(model, inputs, exclude=tuple(args.exclude))
    data = summary(space)
    if args.json:
        try:
            json.dump(data, sys.stdout, indent=1)
            sys.stdout.write("\n")
        except BrokenPipeError:  # `netdiet analyze --json | head` is fine
            pass
        return 0
    print_tables(data)
    return 0


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def print_tables(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    cost = data["cost"]
    console.print(
        f"[bold]{data['model']}[/]: {len(data['groups'])} prunable groups, {len(data['excluded'])} fixed; "
        f"{_si(cost['flops'])} FLOPs (multiply-add = 2), {_si(cost['params'])} params, "
        f"{_si(cost['weight_bytes'])}B weights"
    )
    probe = data.get("probe")
    if probe:
        froze = (
            f", froze {len(probe['frozen'])} group(s) whose size the model's code fixes"
            if probe["frozen"]
            else ""
        )
        skipped = f" (skipped: {probe['skipped']})" if probe["skipped"] else ""
        console.print(
            f"export probe: {probe['exports']} export(s) of {probe['probed']} group(s) in "
            f"{probe['seconds']:.1f} s{froze}{skipped}"
        )
    groups = Table(title="Prunable groups", show_lines=False)
    for col in ("group", "kind", "units", "appears in"):
        groups.add_column(col)
    for g in data["groups"]:
        members = g["members"]
        shown = ", ".join(members[:3]) + (f" (+{len(members) - 3})" if len(members) > 3 else "")
        groups.add_row(g["name"], g["kind"], str(g["size"]), shown)
    console.print(groups)
    fixed = Table(title="Dimensions that do not shrink")
    for col in ("dimension", "size", "why"):
        fixed.add_column(col)
    for e in data["excluded"]:
        if all("kernel size" in r for r in e["reasons"]):
            continue  # every conv has them; listing them hides the dimensions that matter
        fixed.add_row(e["name"], str(e["size"]), "; ".join(e["reasons"][:2]))
    console.print(fixed)
    layers = Table(title="Per-layer cost")
    for col in ("layer", "op", "FLOPs", "params", "% FLOPs"):
        layers.add_column(col, justify="right" if col not in ("layer", "op") else "left")
    total = max(float(cost["flops"]), 1.0)
    for row in cost["layers"]:
        if not row["flops"] and not row["params"]:
            continue
        layers.add_row(
            row["name"], row["op"], _si(row["flops"]), _si(row["params"]), f"{100 * row['flops'] / total:.1f}"
        )
    console.print(layers)
