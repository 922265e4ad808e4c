"""`netdiet.compress`: one call from a trained model and its data to a slim model that meets a budget.

Sits beside the pipeline: it composes the method stage (Compressor), the trainer and the report stage.

1. analyse the model and attach the method (l1l2: gates; baselines: nothing);
2. train the gated copy for `epochs` with the method's penalty in the one training loop (methods that
   train), distilling from the dense model;
3. read off an assignment of knob values within the budget and export the slim model (verified against the masked one);
4. fine-tune the slim model for `finetune_epochs`, distilling from the dense model;
5. measure both: accuracy, exact FLOPs/params, CPU latency.

The user's model is never touched: the teacher and every measurement of "dense" use a frozen copy.
Without a `train_config` the optimiser is one meant for *fine-tuning a trained model* (see
`default_finetune_config`), not for training from scratch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netdiet.compress_state import FINETUNE_DIR, load_gated, save_gated
from netdiet.compressor import Compressor, Exported
from netdiet.cost import cost
from netdiet.cost.latency import LatencyModel, LatencyTable, TimingProtocol
from netdiet.data.adapt import SplitBatches, as_loader
from netdiet.data.batch import Loader
from netdiet.errors import ConfigError, VerificationError
from netdiet.export import RECIPE_ATTR
from netdiet.export.handlers import quantize_exported
from netdiet.methods import Budget, method_class
from netdiet.methods.tighten import tighten
from netdiet.profiling import prepare_latency_table
from netdiet.quant import quantized_layers
from netdiet.report import compare_latency
from netdiet.report.latency_e2e import prepare_runner, time_against_reference
from netdiet.space import analyze
from netdiet.train import TrainConfig, evaluate, fit_inplace
from netdiet.train.checkpoint import has_checkpoint
from netdiet.train.model_io import refuse_non_finite
from netdiet.train.subnet_score import SubnetScorer


@dataclass
class CompressionResult:
    model: nn.Module
    recipe: dict[str, Any]
    report: dict[str, Any]
    exported: Exported
    history: list[dict[str, Any]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)  # per gated step: cost, target, lambda, loss
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # gate values at a few steps


class _Hook:
    """Adapts a Compressor to the trainer's StepHook protocol."""

    def __init__(self, compressor: Compressor) -> None:
        self.compressor = compressor

    def penalty(self) -> torch.Tensor:
        return self.compressor.penalty()

    def begin(self, total_steps: int) -> None:
        self.compressor.begin(total_steps)

    def after_step(self, loss: float) -> None:
        self.compressor.step(loss)

    def status(self) -> dict[str, float]:
        s = self.compressor.status()
        out = {"cost": s.get("surrogate", s["dense"]) / s["dense"], "budget": s["target"] / s["dense"]}
        if "lam" in s:
            out["lam"] = s["lam"]
        return out


def default_finetune_config(model: nn.Module, progress: bool = True) -> TrainConfig:
    """Settings for fine-tuning an already trained model, safe on models netdiet has not seen.

    A from-scratch learning rate (SGD 0.1) wrecks a trained model in a few steps and can diverge on
    residual/concat/depthwise CNNs; fine-tuning wants about a tenth of it, a short warm-up while the
    pruned model re-settles, and clipping as a guard. Models with embeddings or attention (transformers)
    get AdamW at a fine-tuning rate instead.
    """
    transformer = any(isinstance(m, (nn.Embedding, nn.MultiheadAttention)) for m in model.modules())
    if transformer:
        return TrainConfig(optimizer="adamw", lr=5e-5, weight_decay=0.01, grad_clip=1.0, progress=progress)
    return TrainConfig(
        optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, grad_clip=5.0, progress=progress
    )


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, gradient-free copy of the user's model: the teacher and the dense reference."""
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def _first_inputs(loader: Loader) -> tuple[torch.Tensor, ...]:
    for batch in loader:
        return tuple(t[:1] for t in batch.inputs)  # cost is reported per example
    raise ConfigError("the training data yields no batches")


MIN_SPLIT_BATCH = 32  # gated batches never smaller: at 16 ResNet-20's allocation got worse (BN, noise)


def gated_split(loader: Loader, epochs: float, min_steps: int) -> int:
    """Into how many parts each batch is cut so the gated phase makes at least `min_steps` steps."""
    steps = max(1, math.ceil(len(loader) * epochs))
    if steps >= min_steps:
        return 1
    size = next((len(b) for b in loader), 0)
    return max(1, min(math.ceil(min_steps / steps), size // MIN_SPLIT_BATCH))


def compress(
    model: nn.Module,
    train_data: Loader | Any,
    budget: Budget | str,
    *,
    method: str = "l1l2",
    epochs: float = 1,
    finetune_epochs: float | None = None,
    bits: int | None = None,
    eval_data: Loader | Any | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    example_inputs: Any = None,
    train_config: TrainConfig | None = None,
    method_options: dict[str, Any] | None = None,
    exclude: Sequence[Any] = (),
    distill: float = 0.5,
    latency_batches: Sequence[int] = (1,),
    latency_table: LatencyTable | str | Path | None = None,
    latency_backend: str | None = None,
    latency_batch: int | None = None,
    force_table: bool = False,
    latency_fixup: bool = True,
    progress: bool = True,
    work_dir: str | Path | None = None,
) -> CompressionResult:
    """Compress `model` (not modified) to `budget` with `method`; see the module docstring for the steps.

    `eval_data` (a held-out split, never the test split used for reporting) or `eval_fn(model) -> metric`
    measures accuracy. `train_config` sets the optimizer and schedule of both phases (its `epochs` is
    replaced by `epochs` and `finetune_epochs`); without one, `default_finetune_config(model)`.
    `distill` weights distillation from the dense model in both phases (0 = off). A NaN/inf loss,
    gradient or gate stops the run with `netdiet.errors.NonFiniteError`.

    A latency budget (`latency=0.6`, `latency_ms=2.0`) is priced by `latency_table` (a LatencyTable or
    a JSON path; completed and calibrated for this model if needed, and written back to the path). Without
    one, the model is profiled now on `latency_backend` (default onnxruntime where installed) at
    `latency_batch` (default 1; a given table must match it). The report then holds predicted and
    measured latency of both models on that backend. With `latency_fixup` (default) a float export that
    measures over the budget (more than timing noise) is tightened before the fine-tune: units are removed
    from the method's setting until the prediction is lower by the measured miss, up to
    `LATENCY_FIXUPS` times (`report["latency_fixups"]` lists each measurement).

    `work_dir` keeps the run's resumable state (see `netdiet.compress_state`): called again with the same
    arguments and work_dir after an interruption, compress continues after the last finished phase or
    fine-tune epoch and returns the same model an uninterrupted call would have.

    `bits` (default: the method's, 8 for a BOPs budget and for `ptq`, else 32) quantizes every conv and
    linear: the result is fake-quantized (BN folded, ranges calibrated on training batches), the
    fine-tune is quantization-aware, and the report measures the int8 ONNX file ONNX Runtime runs
    (`netdiet.export.int8.to_onnx_int8`). `finetune_epochs` defaults to the method's (1; `ptq`: 0).
    """
    if finetune_epochs is None:
        finetune_epochs = float(method_class(method).default_finetune_epochs)
    if epochs < 0 or finetune_epochs < 0:
        raise ConfigError("epochs and finetune_epochs must be >= 0")
    refuse_non_finite(model, "compress: the model to compress")  # an SVD of NaN fails far from the cause
    t_start = time.perf_counter()
    train_data = as_loader(train_data)
    if eval_data is not None:
        eval_data = as_loader(eval_data)
    inputs = example_inputs if example_inputs is not None else _first_inputs(train_data)
    if isinstance(budget, str):
        budget = Budget.parse(budget)
    space = analyze(model, inputs, exclude=exclude)  # traced once, shared by the table and the method
    table: LatencyTable | None = None
    if budget.needs_latency or latency_table is not None:
        resolved_bits = (
            bits
            if bits is not None
            else (
                8
                if budget.metric == "bops" or method_class(method).learns_bits(method_options or {})
                else method_class(method).default_bits
            )
        )
        # a quantized result runs int8 kernels: its latency is priced from int8 timings, measured here
        precisions = ("fp32", "int8") if int(resolved_bits) <= 8 and budget.needs_latency else ("fp32",)
        table = prepare_latency_table(
            space,
            latency_table,
            backend=latency_backend,
            batch=latency_batch,
            force=force_table,
            progress=progress,
            precisions=precisions,
        )
    evaluator: Callable[[nn.Module], float] | None = None
    if method_class(method).needs_evaluator:  # a method that scores candidates gets the held-out metric
        # candidates are scored on up to SEARCH_EVAL_EXAMPLES held-out examples after their BatchNorm
        # statistics are re-estimated on a few training batches (a masked sub-network keeps the dense
        # model's, which make good candidates look like chance); a user's eval_fn is used as it is
        evaluator = eval_fn or (
            SubnetScorer(eval_data, train_data, max_examples=SEARCH_EVAL_EXAMPLES)
            if eval_data is not None
            else None
        )
    comp = Compressor(
        model,
        inputs,
        budget,
        method,
        exclude=exclude,
        latency_table=table,
        force_table=True,  # checked (or forced by the caller) just above
        space=space,
        evaluator=evaluator,
        bits=bits,
        **(method_options or {}),
    )
    # real batches for activation ranges and the int8 check, read once (only when something is quantized)
    calibration = calibration_batches(train_data) if comp.bits < 32 else []
    comp.calibration = calibration
    if not 0 <= distill <= 1:
        raise ConfigError(f"distill must be in [0, 1], got {distill}")
    base = train_config or default_finetune_config(model, progress=progress)
    dense_ref = frozen_copy(model)
    teacher = dense_ref if distill > 0 else None
    history: list[dict[str, Any]] = []
    work = Path(work_dir) if work_dir is not None else None
    run_id = _run_fingerprint(model, comp, epochs, finetune_epochs, distill, base, method_options)
    run_id["bits"] = comp.bits
    saved = load_gated(work, model, run_id) if work is not None else None
    fixups: list[dict[str, Any]] = []
    if saved is not None:
        exported, trace, gate_snapshots = saved["exported"], saved["trace"], saved["snapshots"]
        history += saved["history"]
        compress_train_s = float(saved["compress_train_s"])
        search_cost, search = dict(saved.get("search_cost") or {}), dict(saved.get("search") or {})
    else:
        t_train = time.perf_counter()
        if comp.needs_training and epochs > 0:
            cfg = replace(base, epochs=epochs, kd_alpha=distill)
            split = gated_split(train_data, epochs, comp.method.min_steps)
            gated_data = SplitBatches(train_data, split) if split > 1 else train_data
            history += fit_inplace(
                comp.model, gated_data, {}, cfg, teacher=teacher, step_hook=_Hook(comp)
            ).history
        compress_train_s = time.perf_counter() - t_train
        # with bits: exported in float; a pruned model is fine-tuned in float and quantized after (ranges
        # calibrated on a just-pruned model fit no fine-tuned one), an unpruned one (ptq) is quantized now
        # and its fine-tune is quantization-aware
        exported = comp.export(quantize=comp.bits >= 32)
        if latency_fixup and comp.latency is not None and comp.budget.needs_latency and comp.bits >= 32:
            exported, fixups = fit_to_measured_latency(comp, exported, model, inputs)
        trace, gate_snapshots = comp.trace, snapshots(comp)
        if work is not None:
            save_gated(
                work,
                exported,
                fingerprint=run_id,
                trace=trace,
                snapshots=gate_snapshots,
                history=history,
                compress_train_s=compress_train_s,
                search_cost=comp.search_cost(),
                search=comp.method.search_record(),
            )
        search_cost, search = comp.search_cost(), comp.method.search_record()
    slim = exported.model
    # a method that trained with quantizers (geta) is quantized first and fine-tuned quantization-aware
    quantize_after = comp.bits < 32 and prunes(exported) and not comp.method.trains_quantized
    if comp.bits < 32 and not quantize_after and not quantized_layers(slim):
        slim = quantize_exported(comp.space, exported.assignment, slim, calibration)
        exported = replace(exported, model=slim, recipe=dict(getattr(slim, RECIPE_ATTR)))
    t_ft = time.perf_counter()
    if finetune_epochs > 0:
        cfg = replace(base, epochs=finetune_epochs, kd_alpha=distill, tensorboard=False)
        if comp.bits < 32 and not quantize_after:  # quantization-aware: BN is folded, frozen
            cfg = replace(cfg, lr=cfg.lr * QAT_LR_SCALE)
        ft_dir = work / FINETUNE_DIR if work is not None else None
        resume = ft_dir is not None and has_checkpoint(ft_dir / "checkpoint")
        before_qat = copy.deepcopy(slim) if comp.bits < 32 and not quantize_after else None
        history += fit_inplace(
            slim, train_data, {}, cfg, teacher=teacher, run_dir=ft_dir, resume=resume
        ).history
        if before_qat is not None:
            loss_before, loss_after = probe_loss(before_qat, train_data), probe_loss(slim, train_data)
            qat_check = {"loss_before": loss_before, "loss_after": loss_after, "kept": "qat"}
            if loss_after > QAT_WORSE_FACTOR * loss_before:
                warnings.warn(
                    f"quantization-aware fine-tuning made the model worse on training batches (loss "
                    f"{loss_before:.3g} -> {loss_after:.3g}); returning the post-training quantized model. "
                    "Lower the fine-tune lr (train_config=TrainConfig(lr=...)) to fine-tune it",
                    stacklevel=2,
                )
                slim, qat_check["kept"] = before_qat, "ptq"
    if quantize_after:  # post-training quantization of the fine-tuned slim model
        slim = quantize_exported(comp.space, exported.assignment, slim, calibration)
        exported = replace(exported, model=slim, recipe=dict(getattr(slim, RECIPE_ATTR)))
        qat_epochs = float(getattr(comp.method, "qat_epochs", 0.0))
        if qat_epochs > 0:  # a second, quantization-aware stage (two-stage baselines)
            cfg = replace(base, epochs=qat_epochs, kd_alpha=distill, tensorboard=False)
            cfg = replace(cfg, lr=cfg.lr * QAT_LR_SCALE)
            history += fit_inplace(slim, train_data, {}, cfg, teacher=teacher).history
    finetune_s = time.perf_counter() - t_ft
    model = dense_ref  # every measurement of "dense" below uses the copy

    def score(m: nn.Module) -> float | None:
        if eval_fn is not None:
            return float(eval_fn(m))
        if eval_data is not None:
            return float(evaluate(m, eval_data)["accuracy"])
        return None

    dense_cost = cost(space, per_layer=False)
    report: dict[str, Any] = {
        "method": method,
        "budget": comp.budget.to_dict(),
        "dense": {
            "accuracy": score(model),
            "flops": float(dense_cost.flops),
            "params": float(dense_cost.params),
        },
        "compressed": {
            "accuracy": score(slim),
            "flops": exported.cost["flops"],
            "params": exported.cost["params"],
        },
        "factorized": exported.factorized,
        "kept": {k: int(v.numel()) for k, v in exported.assignment.keep.items()},
        "sizes": {g.name: g.size for g in comp.space.groups},
        "ranks": {w: int(v.numel()) for w, v in exported.assignment.ranks.items()},
        "dropped_blocks": sorted(p for p, v in exported.assignment.blocks.items() if int(v) == 0),
        "assignment": exported.assignment.to_json(),
        "compress_train_s": compress_train_s,
        "finetune_s": finetune_s,
        "total_s": time.perf_counter() - t_start,
    }
    if comp.latency is not None:
        report["latency"] = latency_section(
            comp.latency, exported.dense_cost, exported.cost, model, slim, inputs
        )
        if fixups:
            report["latency_fixups"] = fixups
        check = measured_budget_check(comp.budget, report["latency"])
        if check is not None:
            report["latency"]["budget_check"] = check
            if not check["met"]:
                warnings.warn(budget_miss_message(comp.budget, check), UserWarning, stacklevel=2)
    report["bits"] = comp.bits
    if comp.bits < 32:
        report["quantized"] = (
            "after the float fine-tune (pruned)" if quantize_after else "before the fine-tune"
        )
    if comp.bits < 32 and finetune_epochs > 0 and not quantize_after:
        report["qat_check"] = qat_check
    report["finetune_lr"] = base.lr * (QAT_LR_SCALE if comp.bits < 32 else 1.0)
    report["dense"]["bops"] = exported.dense_cost["bops"]
    report["compressed"]["bops"] = exported.cost["bops"]
    report["compressed"]["weight_bytes"] = exported.cost["weight_bytes"]
    if comp.bits < 32:
        # the fake-quant model is slower in PyTorch than the float one; what deploys is the int8 file
        report["int8_onnx"] = int8_latency(model, slim, inputs, calibration, latency_batches)
    else:
        for b in latency_batches:
            batch_inputs = tuple(t[:1].expand(b, *t.shape[1:]).contiguous() for t in inputs)
            lat = compare_latency({"dense": model, "compressed": slim}, batch_inputs, repeats=20)
            report["dense"][f"latency_ms_b{b}"] = lat["dense"].median_ms
            report["compressed"][f"latency_ms_b{b}"] = lat["compressed"].median_ms
    report["dynamics"] = dynamics_summary(trace)
    # what choosing the knobs cost, counted the same way for every method (one-run and search alike)
    report["search_cost"] = {
        **search_cost,
        "train_s": compress_train_s,
        "finetune_s": finetune_s,
        "device": "cuda" if any(p.is_cuda for p in slim.parameters()) else "cpu",
    }
    if search:
        report["search"] = search
    if comp.needs_training and epochs > 0:  # batches of the gated phase = training batches / this
        report["dynamics"]["gated_batch_split"] = gated_split(train_data, epochs, comp.method.min_steps)
    return CompressionResult(slim, exported.recipe, report, exported, history, trace, gate_snapshots)


CALIBRATION_BATCHES = 8
# held-out examples a search method's candidate is scored on: a ResNet-20 candidate takes 2.2 s on one
# CPU thread with 1,000 (BatchNorm re-estimation included), 5.1 s with 2,000; the report's accuracies use
# the whole eval_data
SEARCH_EVAL_EXAMPLES = 1000
# Quantization-aware fine-tuning runs at this fraction of the fine-tune lr. The BN is folded with frozen
# statistics (quant.fold.ChannelScale), which has none of train-mode BN's self-correction. Measured with
# SGD from trained ResNet-20s: at the fine-tune lr 0.02 QAT diverged on CIFAR-10 (loss 34, chance
# accuracy); at 0.002 it kept PTQ's accuracy on CIFAR-10 (val 77.3 vs 77.35) but diverged on digits
# (loss 4.9, val 12.7%); at 0.0005 digits kept PTQ's accuracy (78.7 vs 79.3).
QAT_LR_SCALE = 0.025
# QAT whose loss on the probe batches ends above this multiple of where it started is undone
QAT_WORSE_FACTOR = 1.5


def prunes(exported: Exported) -> bool:
    """Whether the exported model is smaller than the dense one (units or ranks removed)."""
    return (
        exported.cost["params"] < exported.dense_cost["params"]
        or exported.cost["flops"] < exported.dense_cost["flops"]
    )


def probe_loss(model: nn.Module, loader: Loader, batches: int = CALIBRATION_BATCHES) -> float:
    """Mean cross-entropy of `model` (eval mode, no gradients) on the first `batches` training batches."""
    was = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                logits = model(*batch.inputs)
                logits = logits[0] if isinstance(logits, (tuple, list)) else logits
                total += float(F.cross_entropy(logits, batch.target, reduction="sum"))
                n += int(batch.target.numel())
    finally:
        model.train(was)
    return total / max(n, 1)


def calibration_batches(loader: Loader, limit: int = CALIBRATION_BATCHES) -> list[Any]:
    """The first `limit` training batches' inputs: real data for activation ranges (held in memory)."""
    out: list[Any] = []
    for batch in loader:
        if len(out) >= limit:
            break
        out.append(batch.inputs if len(batch.inputs) > 1 else batch.inputs[0])
    return out


def int8_latency(
    dense: nn.Module,
    quantized: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    calibration: list[Any],
    batches: Sequence[int],
) -> dict[str, Any]:
    """Dense fp32 ONNX vs the int8 QDQ ONNX of the quantized model on ONNX Runtime CPU (1 thread), per
    batch size; `{"skipped": reason}` without onnxruntime, or when the model has no int8 export."""
    import tempfile

    try:
        from netdiet.export.int8 import to_onnx_int8
        from netdiet.export.onnx import onnx_latency, to_onnx
    except ImportError as exc:  # pragma: no cover - the onnx extra is missing
        return {"skipped": f"onnx/onnxruntime not installed ({exc}); pip install netdiet[onnx]"}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fp32 = to_onnx(dense, inputs, Path(tmp) / "dense.onnx")
            int8 = to_onnx_int8(quantized, inputs, Path(tmp) / "int8.onnx", calibration)
        except (ConfigError, VerificationError, ImportError) as exc:
            return {"skipped": str(exc)}
        out: dict[str, Any] = {
            "max_rel_error": int8.max_rel_error,
            "top1_agreement": int8.top1_agreement,
            "int8_kernels": int8.int8_kernels,
            "int8_layers": int8.layers,  # of the quantized layers, those ONNX Runtime runs on int8 kernels
            "quantized_layers": len(quantized_layers(quantized)),
            "dense_file_bytes": fp32.stat().st_size,
            "int8_file_bytes": int8.path.stat().st_size,
        }
        for b in batches:
            batch_inputs = tuple(t[:1].expand(b, *t.shape[1:]).contiguous() for t in inputs)
            repeats = 30 if b <= 8 else 10
            dense_ms = onnx_latency(fp32, batch_inputs, repeats=repeats)
            int8_ms = onnx_latency(int8.path, batch_inputs, repeats=repeats)
            out[f"dense_ms_b{b}"], out[f"int8_ms_b{b}"] = dense_ms, int8_ms
            out[f"speedup_b{b}"] = dense_ms / max(int8_ms, 1e-9)
        return out


def _run_fingerprint(
    model: nn.Module,
    comp: Compressor,
    epochs: float,
    finetune_epochs: float,
    distill: float,
    config: TrainConfig,
    options: dict[str, Any] | None,
) -> dict[str, Any]:
    """What must be equal for a saved state to belong to this call (weights by content, not by shape)."""
    digest = hashlib.sha256()
    for name, t in model.state_dict().items():
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {
        "weights": digest.hexdigest()[:16],
        "method": comp.method.name,
        "budget": str(comp.budget),
        "options": json.dumps(options or {}, sort_keys=True, default=str),
        "epochs": float(epochs),
        "finetune_epochs": float(finetune_epochs),
        "distill": float(distill),
        "train_config": json.dumps(
            {k: v for k, v in config.to_json().items() if k not in ("progress", "log_epochs", "tensorboard")},
            sort_keys=True,
            default=str,
        ),
    }


def snapshots(comp: Compressor) -> list[dict[str, Any]]:
    return list(getattr(comp.method, "snapshots", []))


def dynamics_summary(trace: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the gated phase ended: relaxed cost against the budget, lambda, whether it hardened."""
    if not trace:
        return {"gated_steps": 0}
    last = trace[-1]
    if "stage" in last:  # a staged method (warm-up, projection, ...): where each stage began, final bits
        starts: dict[str, int] = {}
        for t in trace:
            starts.setdefault(str(t["stage"]), int(t["step"]))
        keys = (
            "b_max_weight",
            "b_max_act",
            "mean_weight_bits",
            "mean_act_bits",
            "redundant_units",
            "max_bound_violation",
        )
        return {"gated_steps": len(trace), "stage_starts": starts, **{k: last[k] for k in keys if k in last}}
    if "budget_ratio" not in last:  # a method with its own schedule (knapsack's pruning events)
        return {"gated_steps": len(trace), **{k: v for k, v in last.items() if k not in ("step", "loss")}}
    hard = [t for t in trace if t.get("phase") == "harden"]
    return {
        "gated_steps": len(trace),
        # during hardening the relaxed cost keeps falling as dropped gates fade; the exported cost is in
        # report["compressed"], the cost the gates had reached when the setting was fixed is here
        "budget_ratio": last["budget_ratio"],
        "cost_ratio_at_hardening": hard[0]["cost_ratio"] if hard else None,
        "final_lambda": last["lam"],
        "hardened": bool(hard),
    }


LATENCY_FIXUPS = 3  # measured fix-ups of a latency budget at most (each times dense and export 5 rounds)
MEASURED_SLACK = 0.05  # the noise of an interleaved best-of-medians timing here; a larger miss is reported


def measured_budget_check(budget: Budget, latency: dict[str, Any]) -> dict[str, Any] | None:
    """For a latency budget: the measured latency (ratio to dense for `latency=`, ms for `latency_ms=`)
    against the limit. The budget is met by the table's prediction by construction; the clock can
    disagree (the methods pick settings where the table errs), and the report must say so."""
    if not budget.needs_latency:
        return None
    measured = latency["measured_ratio"] if budget.relative else latency["measured_ms"]
    over = measured / budget.value - 1.0
    return {
        "limit": budget.value,
        "measured": measured,
        "relative": budget.relative,
        "over": over,
        "met": over <= MEASURED_SLACK,
    }


def fit_to_measured_latency(
    comp: Compressor, exported: Exported, dense: nn.Module, inputs: Any
) -> tuple[Exported, list[dict[str, Any]]]:
    """Measure the export against the latency budget; while it is over by more than the timing noise,
    lower the predicted target by the miss and tighten the method's setting to it (`methods.tighten`:
    units removed, weakest first, nothing added), then measure again. Returns the export and one record
    per measurement."""
    records: list[dict[str, Any]] = []
    assert comp.latency is not None
    for attempt in range(LATENCY_FIXUPS + 1):
        lat = latency_section(comp.latency, exported.dense_cost, exported.cost, dense, exported.model, inputs)
        check = measured_budget_check(comp.budget, lat)
        assert check is not None
        records.append(
            {
                "predicted_ratio": lat["predicted_ratio"],
                "measured_ratio": lat["measured_ratio"],
                "measured_ms": lat["measured_ms"],
                "met": check["met"],
            }
        )
        if check["met"] or attempt == LATENCY_FIXUPS:
            break
        target = exported.cost["latency_ms"] * comp.budget.value / check["measured"]
        try:
            own = tighten(
                comp.method.context,
                exported.assignment,
                comp.method.weights_for_export(exported.assignment),
                target,
            )
        except ConfigError as err:  # nothing left to remove: the report's budget check says it was missed
            records[-1]["stopped"] = str(err)
            break
        exported = comp.export(quantize=True, assignment=own)
    return exported, records


def budget_miss_message(budget: Budget, check: dict[str, Any]) -> str:
    what = "of the dense model" if check["relative"] else "ms"
    return (
        f"the compressed model meets {budget} by the latency table's prediction, but measured "
        f"{check['measured']:.3g} {what}, {100 * check['over']:.0f}% over the limit (more than the "
        f"{100 * MEASURED_SLACK:.0f}% timing noise allowed). The table mispredicts this setting: validate it "
        "(`netdiet profile ... --validate 10`), re-profile on an idle machine, or lower the budget by the miss."
    )


def latency_section(
    latency: LatencyModel,
    dense_cost: dict[str, float],
    compressed_cost: dict[str, float],
    dense: nn.Module,
    slim: nn.Module,
    inputs: Any,
) -> dict[str, Any]:
    """Predicted and measured latency of both models on the table's backend (interleaved, best of three
    medians each), and how much of the predicted reduction was measured. A quantized result is timed as
    the int8 ONNX file it deploys as, against the dense fp32 model."""
    env = latency.table.env
    precision = "int8" if quantized_layers(slim) else "fp32"
    runners = [
        prepare_runner(
            m,
            inputs,
            latency.table.backend,
            batch=latency.batch,
            threads=int(env["threads"]),
            dtype=env["dtype"],
            precision=p,
        )
        for m, p in ((dense, "fp32"), (slim, precision))
    ]
    dense_ms, (slim_ms,) = time_against_reference(
        runners[0], runners[1:], TimingProtocol(min_sample_ms=2.0), rounds=5
    )
    measured = {"dense": dense_ms, "compressed": slim_ms}
    predicted_ratio = compressed_cost["latency_ms"] / dense_cost["latency_ms"]
    measured_ratio = measured["compressed"] / measured["dense"]
    return {
        "backend": latency.table.backend,
        "batch": latency.batch,
        "threads": int(env["threads"]),
        "device": env["device"],
        "calibrated": latency.calibrated and latency.is_calibrated(precision),
        "precision": precision,
        "predicted_dense_ms": dense_cost["latency_ms"],
        "predicted_ms": compressed_cost["latency_ms"],
        "predicted_ratio": predicted_ratio,
        "measured_dense_ms": measured["dense"],
        "measured_ms": measured["compressed"],
        "measured_ratio": measured_ratio,
        # measured change over predicted change; both negative when the export is slower than dense
        "measured_over_predicted_reduction": (1 - measured_ratio) / (1 - predicted_ratio)
        if abs(1 - predicted_ratio) > 1e-9
        else None,
    }
