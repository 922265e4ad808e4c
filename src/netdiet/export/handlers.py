"""Export as a chain of handlers, one per knob kind, applied in order: slice, drop blocks, factorise,
quantise.

Each handler makes its knobs real on the model the previous one produced and checks the result
against its own reference: slicing against the masked model (dropped units zeroed), factorising
against the unfactorised slim model, quantising (fake quantizers with calibrated ranges) against the
float model. The int8 file a runtime runs is written from the quantized model by `export.int8`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from netdiet.errors import ConfigError, VerificationError
from netdiet.export.blocks import drop_blocks, return_shapes
from netdiet.export.exporter import RECIPE_ATTR, export_model, mask_model
from netdiet.export.lowrank import factorize, pays
from netdiet.export.verify import verify as verify_outputs
from netdiet.graph import normalize_inputs
from netdiet.quant import prepare_quantized
from netdiet.quant.attach import QUANTIZABLE
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


class DropBlockHandler(Handler):
    """block knobs at 0: each such residual block becomes the identity on its stream, checked against the
    masked model with the same blocks dropped (so the slicing around them is checked too)."""

    kinds = ("block",)

    def apply(
        self, space: Space, assignment: Assignment, model: nn.Module, *, verify: bool, source: nn.Module
    ) -> HandlerResult:
        dropped = [path for path, value in assignment.blocks.items() if int(value) == 0]
        if not dropped:
            return HandlerResult(model, {})
        # what each block returns, read on the sliced copy (it computes what the source does, checked by
        # the slice handler), so no hook ever touches the caller's model
        shapes = return_shapes(model, dropped, space.example_inputs)
        drop_blocks(model, shapes)
        if verify and not any(p.device.type == "meta" for p in model.parameters()):
            reference = drop_blocks(mask_model(space, assignment.keep, source=source), shapes)
            verify_outputs(reference, model, space.example_inputs)
        return HandlerResult(model, {"dropped_blocks": shapes})


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
            module = _submodule_or_none(model, info.module_path)
            if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                continue  # not factorisable, or inside a dropped block
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
    """weight_bits / act_bits knobs: the model with fake quantizers at those bits (BN folded into the
    convs, activation ranges calibrated on real batches), checked against the float model it came from.

    This is the model a quantization-aware fine-tune trains and `netdiet.export.int8.to_onnx_int8`
    turns into int8 kernels. A factorised layer's bits go to both of its factors."""

    kinds = ("weight_bits", "act_bits")
    max_rel_error_8bit: ClassVar[float] = 0.25  # fake-quant vs float output at >= 8 bits everywhere

    def __init__(self) -> None:
        self.calibration: Iterable[Any] | None = None

    def layer_bits(
        self, space: Space, assignment: Assignment, model: nn.Module
    ) -> dict[str, tuple[int, int]]:
        """Module path of each layer to quantize in `model` -> (weight bits, activation bits)."""
        wanted: dict[str, list[int]] = {}
        for weight, bits in assignment.weight_bits.items():
            info = space.param_info(weight)
            if info is None:
                raise ConfigError(f"weight_bits knob on '{weight}', which is not a parameter of the model")
            wanted.setdefault(info.module_path, [32, 32])[0] = int(bits)
        for layer, bits in assignment.act_bits.items():
            wanted.setdefault(layer, [32, 32])[1] = int(bits)
        out: dict[str, tuple[int, int]] = {}
        for path, (w, a) in wanted.items():
            if w >= 32 and a >= 32:
                continue
            module = _submodule_or_none(model, path)
            if module is None:
                continue  # inside a dropped block: nothing left to quantize
            targets = (
                [path]
                if isinstance(module, QUANTIZABLE)
                else [
                    f"{path}.{name}"
                    for name, child in module.named_modules()
                    if name and isinstance(child, QUANTIZABLE)
                ]
            )
            if not targets:
                raise ConfigError(f"bit knobs on '{path}', which has no Conv or Linear layer to quantize")
            for target in targets:
                out[target] = (w, a)
        return out

    def apply(
        self, space: Space, assignment: Assignment, model: nn.Module, *, verify: bool, source: nn.Module
    ) -> HandlerResult:
        bits = self.layer_bits(space, assignment, model)
        if not bits:
            return HandlerResult(model, {})
        if self.calibration is None:
            raise ConfigError(
                f"{len(bits)} layer(s) get fewer than 32 bits, and quantizing needs real input batches to "
                "set activation ranges: pass calibration= (an iterable of input batches, e.g. training data)"
            )
        quantized, plan = prepare_quantized(model, space.example_inputs, self.calibration, bits=bits)
        if verify:
            self._check(model, quantized, space.example_inputs, low=min(min(b) for b in bits.values()) < 8)
        return HandlerResult(quantized, {"quant": plan.to_json()})

    def _check(self, float_model: nn.Module, quantized: nn.Module, example_inputs: Any, low: bool) -> None:
        inputs = normalize_inputs(example_inputs)
        with torch.no_grad():
            was = (float_model.training, quantized.training)
            float_model.eval()
            quantized.eval()
            try:
                ref = float_model(*inputs.args, **inputs.kwargs)
                got = quantized(*inputs.args, **inputs.kwargs)
            finally:
                float_model.train(was[0])
                quantized.train(was[1])
        ref = ref[0] if isinstance(ref, (tuple, list)) else ref
        got = got[0] if isinstance(got, (tuple, list)) else got
        if not torch.isfinite(got).all():
            raise VerificationError("the quantized model produces NaN/inf on the example inputs")
        err = float((got - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)
        if not low and err > self.max_rel_error_8bit:
            raise VerificationError(
                f"the 8-bit fake-quant model differs from the float model by {err:.3g} (max relative error > "
                f"{self.max_rel_error_8bit}): the calibration batches do not look like the model's inputs"
            )


def _submodule_or_none(model: nn.Module, path: str) -> nn.Module | None:
    """The module at `path`, or None where it is gone (inside a block the drop handler removed)."""
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        return None


# slicing first (it builds the slim model from the source weights), then blocks, ranks and bits on it
HANDLERS: tuple[Handler, ...] = (SliceHandler(), DropBlockHandler(), FactoriseHandler(), QuantiseHandler())


def export_assignment(
    space: Space,
    assignment: Assignment,
    *,
    source: nn.Module | None = None,
    verify: bool = True,
    calibration: Iterable[Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The exported model of a hard assignment and what each handler applied.

    `source` supplies the weights (a model with the analysed structure; default the analysed model).
    Neither is modified. The recipe on the result records the assignment (`recipe["assignment"]`) and,
    when bit knobs quantize layers, the quant plan (`recipe["quant"]`). `calibration` (input batches)
    sets activation ranges; it is needed only when some bit knob is below 32.
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
        if isinstance(handler, QuantiseHandler):
            handler = QuantiseHandler()
            handler.calibration = calibration
        result = handler.apply(space, assignment, model, verify=verify, source=base)
        model = result.model
        applied.update(result.applied)
    recipe = dict(getattr(model, RECIPE_ATTR))
    recipe["ranks"] = dict(applied.get("ranks", {}))
    if applied.get("dropped_blocks"):
        recipe["dropped_blocks"] = dict(applied["dropped_blocks"])
    if "quant" in applied:
        recipe["quant"] = applied["quant"]
    recipe["assignment"] = assignment.to_json()
    setattr(model, RECIPE_ATTR, recipe)
    return model, applied


def quantize_exported(
    space: Space,
    assignment: Assignment,
    model: nn.Module,
    calibration: Iterable[Any],
    *,
    verify: bool = True,
) -> nn.Module:
    """The quantise handler alone, on a model already sliced and factorised from `space` (e.g. after
    it was fine-tuned in float): bits from `assignment`, ranges calibrated on `calibration`. The result
    carries the quant plan in its recipe; `model` is not modified."""
    handler = QuantiseHandler()
    handler.calibration = calibration
    result = handler.apply(space, Assignment(assignment).validate(space), model, verify=verify, source=model)
    if "quant" in result.applied:
        recipe = dict(getattr(result.model, RECIPE_ATTR, None) or {})
        recipe["quant"] = result.applied["quant"]
        setattr(result.model, RECIPE_ATTR, recipe)
    return result.model
