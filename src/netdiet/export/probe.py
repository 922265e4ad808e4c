"""Find, at analysis time, the groups whose size the model's Python code fixes, and freeze them.

The graph shows what the traced ops did at the example sizes; it cannot see that `forward()` computes a
reshape from `self.hidden_dim`, `C // self.num_heads` or a literal split. Such a group would be offered to
methods and only fail at export, after training. The probe exports the model with groups one step smaller
(the cheapest setting that changes every size they touch) and checks it against the masked reference;
groups that fail are found by splitting the failing set in halves, so a model whose groups all pass costs
one export. A failure names the module that raised; the groups with a parameter there are tried
alone first, the rest again together, so k bad groups cost about 2k more exports (halving where
the failing module is unknown).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netdiet.export.blocks import drop_blocks, return_shapes
from netdiet.export.exporter import mask_model, shrink
from netdiet.export.slicing import copy_model
from netdiet.export.verify import verify
from netdiet.graph.capture import eval_mode
from netdiet.space import Group, Space


@dataclass
class ProbeReport:
    """What the probe cost and what it froze (group name -> why), for `analyze` to report."""

    seconds: float = 0.0
    exports: int = 0
    probed: int = 0
    frozen: dict[str, str] = field(default_factory=dict)
    skipped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "exports": self.exports,
            "probed": self.probed,
            "frozen": dict(self.frozen),
            "skipped": self.skipped,
        }


def one_step_smaller(group: Group) -> torch.Tensor | None:
    """Keep all but the last step of units, or None where the group cannot shrink by a step."""
    step = max(1, group.multiple_of)
    n = group.size - step
    if n < max(1, group.min_keep):
        return None
    return torch.arange(n)


def probe_space(space: Space, *, max_exports: int = 1000) -> ProbeReport:
    """Freeze (in `space`, with the reason and the module named) every group export cannot shrink."""
    start = time.perf_counter()
    report = ProbeReport()
    if any(p.device.type == "meta" for p in space.model.parameters()):
        report.skipped = "weights on the meta device cannot run"
        return report
    smaller = {g.name: one_step_smaller(g) for g in space.groups}
    steps = {n: k for n, k in smaller.items() if k is not None}
    names = list(steps)
    report.probed = len(names)
    touches = {g.name: {m.param.rpartition(".")[0] for m in g.members} for g in space.groups}
    alone: dict[str, tuple[str, str] | None] = {}

    def attempt(subset: Sequence[str]) -> tuple[str, str] | None:
        if len(subset) == 1 and subset[0] in alone:
            return alone[subset[0]]
        if report.exports >= max_exports:
            return ("the probe's export budget ran out before this group was checked", "")
        report.exports += 1
        result = _failure(space, {n: steps[n] for n in subset})
        if len(subset) == 1:
            alone[subset[0]] = result
        return result

    def suspects(subset: list[str], module: str) -> list[str]:
        """Groups with a parameter inside (or above) the module that raised: the likely culprits."""
        if not module or module == "<top>":
            return []
        return [
            n
            for n in subset
            if any(
                p == module or p.startswith(module + ".") or module.startswith(p + ".") for p in touches[n]
            )
        ]

    def search(subset: list[str]) -> None:
        result = attempt(subset)
        if result is None:
            return
        if len(subset) == 1:
            report.frozen[subset[0]] = result[0]
            return
        likely = suspects(subset, result[1])
        if likely and len(likely) < len(subset):
            for name in likely:
                search([name])
            search([n for n in subset if n not in likely])
            return
        half = len(subset) // 2
        search(subset[:half])
        search(subset[half:])

    if names:
        search(names)
    rest = [n for n in names if n not in report.frozen]
    if report.frozen and rest and attempt(rest) is not None:
        # Each part passed alone but not together: add groups one at a time to a set known to pass.
        passing: list[str] = []
        for name in rest:
            result = attempt([*passing, name])
            if result is None:
                passing.append(name)
            else:
                report.frozen[name] = f"{result[0]} (together with other groups)"
    if report.frozen:
        space.freeze_groups(
            {n: f"probe: exporting it one step smaller fails ({r})" for n, r in report.frozen.items()}
        )
    _probe_blocks(space, report)
    report.seconds = time.perf_counter() - start
    return report


def _probe_blocks(space: Space, report: ProbeReport) -> None:
    """Blocks the exporter cannot drop (a layer that also returns its position bias, say) lose their knob."""
    paths = [b.module_path for b in space.analysis.blocks]
    bad: dict[str, str] = {}

    def search(subset: list[str]) -> None:
        report.exports += 1
        reason = _drop_failure(space, subset)
        if reason is None:
            return
        if len(subset) == 1:
            bad[subset[0]] = reason
            return
        half = len(subset) // 2
        search(subset[:half])
        search(subset[half:])

    if paths:
        search(paths)
    if bad:
        report.frozen.update({f"block:{p}": r for p, r in bad.items()})
        space.freeze_blocks({p: f"probe: dropping it fails ({r})" for p, r in bad.items()})


def _drop_failure(space: Space, paths: list[str]) -> str | None:
    try:
        model = copy_model(space.model)  # the hooks that find what a block returns go on the copy
        shapes = return_shapes(model, paths, space.example_inputs)
        drop_blocks(model, shapes)
        inputs = space.example_inputs
        with torch.no_grad(), eval_mode(model):
            model(*inputs.args, **inputs.kwargs)
    except Exception as exc:
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return None


def _failure(space: Space, keep: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    """None if the export of `keep` runs and equals the masked model; else (what failed, module path)."""
    try:
        slim = shrink(space, keep, copy_model(space.model))
    except Exception as exc:  # the exporter itself refused: the group cannot be delivered either
        return f"{type(exc).__name__}: {_first_line(exc)}", ""
    inputs = space.example_inputs
    try:  # a size fixed in code usually fails to run: found without building the reference
        with torch.no_grad(), eval_mode(slim):
            slim(*inputs.args, **inputs.kwargs)
    except Exception as exc:
        where = _module_of(exc, slim)
        return f"{type(exc).__name__}: {_first_line(exc)}" + (f" in module '{where}'" if where else ""), where
    try:
        verify(mask_model(space, keep), slim, inputs, rtol=1e-4, trials=1, double=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {_first_line(exc)}", ""
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _module_of(exc: BaseException, model: nn.Module) -> str:
    """The innermost module of `model` (by path) whose code was running when `exc` was raised."""
    paths = {id(m): p for p, m in model.named_modules()}
    found = ""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        obj = frame.f_locals.get("self")
        if isinstance(obj, nn.Module) and id(obj) in paths:
            found = paths[id(obj)] or "<top>"
    return found
