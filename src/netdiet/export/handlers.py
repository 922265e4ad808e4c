"""Export as a chain of handlers, one per knob kind, applied in order: slice, factorise, quantise.

Each handler makes its knobs real on the model the previous one produced and checks the result
against its own reference: slicing against the masked model (dropped units zeroed), factorising
against the unfactorised slim model. Quantisation has no handler that can make bits real yet, so an
assignment with bit knobs below 32 is refused here rather than exported as if it were fp32.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from netdiet.errors import ConfigError
from netdiet.export.exporter import RECIPE_ATTR, export_model
from netdiet.export.lowrank import factorize, pays
from netdiet.export.verify import verify as verify_outputs
from netdiet.space import Assignment, Space


@dataclass
class HandlerResult:
    model: nn.Module
    applied: dict[str, Any]  # what the handler made real, for the recipe and the report


class Handler:
    """Makes the knobs of `kinds` real. `apply` gets the model the previous handler returned."""

    kinds: ClassVar[tuple[str, ...]] = ()

    def apply(
        self, space: Space, assignment: Assignment, model: nn.Module, *, verify: bool, source: nn.Module
    ) -> HandlerResult:
        raise NotImplementedError


class SliceHandler(Handler):
    """keep knobs: the physically smaller model, checked against the masked reference."""

    kinds = ("keep",)

    def apply(
        self, space: Space, assignment: Assignment, model: nn.Module, *, verify: bool, source: nn.Module
    ) -> HandlerResult:
        slim = export_model(space, assignment.keep, verify=verify, source=source)
        kept = {name: int(idx.numel()) for name, idx in space.validate(assignment.keep).items()}
        return HandlerResult(slim, {"kept": kept})


class FactoriseHandler(Handler):
    """rank knobs: each layer whose kept rank lowers its cost becomes two smaller layers, checked
    against the slim model before factorisation (the factors reproduce a weight of at most that rank)."""

    kinds = ("rank",)
    rtol: ClassVar[float] = 1e-4

    def apply(
        self, space: Space, assignment: Assignment, model: nn.Module, *, verify: bool, source: nn.Module
    ) -> HandlerResult:
        ranks: dict[str, int] = {}
        for weight, kept in assignment.ranks.items():
            info = space.param_info(weight)
            if info is None:
                raise ConfigError(f"rank knob on '{weight}', which is not a parameter of the analysed model")
            module = model.get_submodule(info.module_path)
            if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                continue
            w = module.weight
            rest = w[0].numel()
            r = int(kept) if isinstance(kept, int) else int(kept.numel())
            if pays(w.shape[0], rest, r):
                ranks[info.module_path] = r
        if ranks:
            before = copy.deepcopy(model) if verify else None
            factorize(model, ranks)
            if before is not None and not any(p.device.type == "meta" for p in model.parameters()):
                verify_outputs(before, model, space.example_inputs, rtol=self.rtol)
        return HandlerResult(model, {"ranks": ranks})


class QuantiseHandler(Handler):
    """weight_bits / act_bits knobs. Until quantizers exist, only 32 bits (no change) can be exported."""

    kinds = ("weight_bits", "act_bits")

    def apply(
        self, space: Space, assignment: Assignment, model: nn.Module, *, verify: bool, source: nn.Module
    ) -> HandlerResult:
        low = {
            kid: int(v) for kid, v in assignment.items() if kid.split(":", 1)[0] in self.kinds and int(v) < 32
        }
        if low:
            raise ConfigError(
                f"{len(low)} bit knob(s) below 32 bits (e.g. {next(iter(low.items()))}): netdiet cannot export "
                "quantized layers yet, and exporting them as fp32 would misreport the model. Price bits with "
                "netdiet.cost.price, but export assignments with 32-bit knobs only."
            )
        return HandlerResult(model, {})


HANDLERS: tuple[Handler, ...] = (SliceHandler(), FactoriseHandler(), QuantiseHandler())


def export_assignment(
    space: Space,
    assignment: Assignment,
    *,
    source: nn.Module | None = None,
    verify: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """The exported model of a hard assignment and what each handler applied.

    `source` supplies the weights (a model with the analysed structure; default the analysed model).
    Neither is modified. The recipe on the result records the assignment (`recipe["assignment"]`).
    """
    assignment = Assignment(assignment).validate(space)
    base = space.model if source is None else source
    covered = {kind for h in HANDLERS for kind in h.kinds}
    unknown = {kid.split(":", 1)[0] for kid in assignment} - covered
    if unknown:
        raise ConfigError(f"no export handler for knob kind(s) {sorted(unknown)}")
    model: nn.Module = base
    applied: dict[str, Any] = {}
    for handler in HANDLERS:
        result = handler.apply(space, assignment, model, verify=verify, source=base)
        model = result.model
        applied.update(result.applied)
    recipe = dict(getattr(model, RECIPE_ATTR))
    recipe["ranks"] = dict(applied.get("ranks", {}))
    recipe["assignment"] = assignment.to_json()
    setattr(model, RECIPE_ATTR, recipe)
    return model, applied
