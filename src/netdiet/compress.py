"""`netdiet.compress`: one call from a trained model and its data to a slim model that meets a budget.

Sits beside the pipeline: it composes the method stage (Compressor), the trainer and the report stage.

1. analyse the model and attach the method (l1l2: gates; baselines: nothing);
2. train the gated copy for `epochs` with the method's penalty in the one training loop (l1l2 only);
3. read off a setting within the budget and export the slim model (verified against the masked one);
4. fine-tune the slim model for `finetune_epochs`, distilling from the dense model;
5. measure both: accuracy, exact FLOPs/params, CPU latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netdiet.compressor import Compressor, Exported
from netdiet.cost import cost
from netdiet.cost.latency import LatencyModel, LatencyTable, TimingProtocol
from netdiet.data.adapt import as_loader
from netdiet.data.batch import Loader
from netdiet.errors import ConfigError
from netdiet.methods import Budget
from netdiet.methods.l1l2 import L1L2
from netdiet.profiling import prepare_latency_table
from netdiet.report import compare_latency
from netdiet.report.latency_e2e import prepare_runner, time_against_reference
from netdiet.space import analyze
from netdiet.train import TrainConfig, evaluate, fit_inplace


@dataclass
class CompressionResult:
    model: nn.Module
    recipe: dict[str, Any]
    report: dict[str, Any]
    exported: Exported
    history: list[dict[str, Any]] = field(default_factory=list)


class _Hook:
    """Adapts a Compressor to the trainer's StepHook protocol."""

    def __init__(self, compressor: Compressor) -> None:
        self.compressor = compressor

    def penalty(self) -> torch.Tensor:
        return self.compressor.penalty()

    def after_step(self) -> None:
        self.compressor.step()

    def status(self) -> dict[str, float]:
        s = self.compressor.status()
        out = {"cost": s.get("surrogate", s["dense"]) / s["dense"], "budget": s["target"] / s["dense"]}
        if "lam" in s:
            out["lam"] = s["lam"]
        return out


def _first_inputs(loader: Loader) -> tuple[torch.Tensor, ...]:
    for batch in loader:
        return tuple(t[:1] for t in batch.inputs)  # cost is reported per example
    raise ConfigError("the training data yields no batches")


def compress(
    model: nn.Module,
    train_data: Loader | Any,
    budget: Budget | str,
    *,
    method: str = "l1l2",
    epochs: int = 1,
    finetune_epochs: int = 1,
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
    progress: bool = True,
) -> CompressionResult:
    """Compress `model` (not modified) to `budget` with `method`; see the module docstring for the steps.

    `eval_data` (a held-out split, never the test split used for reporting) or `eval_fn(model) -> metric`
    measures accuracy. `train_config` sets the optimizer and schedule of both phases (its `epochs` is
    replaced by `epochs` and `finetune_epochs`).

    A latency budget (`latency=0.6`, `latency_ms=2.0`) is priced by `latency_table` (a LatencyTable or
    a JSON path; completed and calibrated for this model if needed, and written back to the path). Without
    one, the model is profiled now on `latency_backend` (default onnxruntime where installed) at
    `latency_batch` (default 1; a given table must match it). The report then holds predicted and
    measured latency of both models on that backend.
    """
    if epochs < 0 or finetune_epochs < 0:
        raise ConfigError("epochs and finetune_epochs must be >= 0")
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
        table = prepare_latency_table(
            space,
            latency_table,
            backend=latency_backend,
            batch=latency_batch,
            force=force_table,
            progress=progress,
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
        **(method_options or {}),
    )
    base = train_config or TrainConfig(progress=progress)
    history: list[dict[str, Any]] = []
    t_train = time.perf_counter()
    if isinstance(comp.method, L1L2) and epochs > 0:
        cfg = replace(base, epochs=epochs, kd_alpha=0.0)
        history += fit_inplace(comp.model, train_data, {}, cfg, step_hook=_Hook(comp)).history
    compress_train_s = time.perf_counter() - t_train
    exported = comp.export()
    slim = exported.model
    t_ft = time.perf_counter()
    if finetune_epochs > 0:
        cfg = replace(base, epochs=finetune_epochs, kd_alpha=distill if distill > 0 else 0.0)
        teacher = model if distill > 0 else None
        history += fit_inplace(slim, train_data, {}, cfg, teacher=teacher).history
    finetune_s = time.perf_counter() - t_ft

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
        "kept": {k: int(v.numel()) for k, v in exported.setting.keep.items()},
        "sizes": {g.name: g.size for g in comp.space.groups},
        "ranks": {w: int(v.numel()) for w, v in exported.setting.ranks.items()},
        "compress_train_s": compress_train_s,
        "finetune_s": finetune_s,
        "total_s": time.perf_counter() - t_start,
    }
    if comp.latency is not None:
        report["latency"] = latency_section(
            comp.latency, exported.dense_cost, exported.cost, model, slim, inputs
        )
    for b in latency_batches:
        batch_inputs = tuple(t[:1].expand(b, *t.shape[1:]).contiguous() for t in inputs)
        lat = compare_latency({"dense": model, "compressed": slim}, batch_inputs, repeats=20)
        report["dense"][f"latency_ms_b{b}"] = lat["dense"].median_ms
        report["compressed"][f"latency_ms_b{b}"] = lat["compressed"].median_ms
    return CompressionResult(slim, exported.recipe, report, exported, history)


def latency_section(
    latency: LatencyModel,
    dense_cost: dict[str, float],
    compressed_cost: dict[str, float],
    dense: nn.Module,
    slim: nn.Module,
    inputs: Any,
) -> dict[str, Any]:
    """Predicted and measured latency of both models on the table's backend (interleaved, best of three
    medians each), and how much of the predicted reduction was measured."""
    env = latency.table.env
    runners = [
        prepare_runner(
            m,
            inputs,
            latency.table.backend,
            batch=latency.batch,
            threads=int(env["threads"]),
            dtype=env["dtype"],
        )
        for m in (dense, slim)
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
        "calibrated": latency.calibrated,
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
