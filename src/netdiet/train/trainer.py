"""The one training loop: dense training, compression methods and fine-tuning all call `fit`.

`fit` trains a copy and leaves the caller's model untouched; `fit_inplace` says in its name that it
modifies the model it is given. Both are deterministic for a given seed on CPU, resume exactly from
the last checkpoint, and run data-parallel when launched by torchrun.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from netdiet.data.batch import Batch, Loader
from netdiet.errors import NonFiniteError
from netdiet.train.checkpoint import TrainingState, has_checkpoint, load_checkpoint, save_checkpoint
from netdiet.train.config import TrainConfig
from netdiet.train.distributed import DistContext, all_reduce_sum, barrier, init_distributed
from netdiet.train.evaluate import evaluate
from netdiet.train.losses import training_loss
from netdiet.train.metrics import MetricsLogger
from netdiet.train.optim import build_optimizer
from netdiet.train.schedule import cosine_with_warmup
from netdiet.train.seed import epoch_seed, seed_everything
from netdiet.train.sync_batchnorm import global_batchnorm

EpochCallback = Callable[[int, dict[str, Any]], None]


class StepHook(Protocol):
    """What a compression method plugs into the loop: `begin` gets the number of optimizer steps the
    run will make, `after_step` the step's loss."""

    def begin(self, total_steps: int) -> None: ...

    def penalty(self) -> torch.Tensor: ...

    def after_step(self, loss: float) -> None: ...

    def status(self) -> dict[str, float]: ...


def _hint(cfg: TrainConfig) -> str:
    hint = (
        f"lower the learning rate (now {cfg.lr:g}; for fine-tuning a trained model 0.01 (SGD) or 1e-4 "
        "(AdamW) is typical)"
    )
    if cfg.grad_clip is None:
        hint += ", set grad_clip (e.g. 1.0)"
    return hint


def _diverged(what: str, value: float, step: int, cfg: TrainConfig) -> NonFiniteError:
    hint = _hint(cfg)
    return NonFiniteError(
        f"training diverged: non-finite {what} ({value}) at step {step}. To fix: {hint}, or check the "
        "data for NaN/inf. The run was stopped before saving anything from this step.",
        step=step,
        what=what,
        value=value,
    )


def check_finite_weights(model: nn.Module, step: int | None = None, cfg: TrainConfig | None = None) -> None:
    """Refuse a model holding NaN/inf (never save or return one)."""
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            where = f" at step {step}" if step is not None else ""
            hint = _hint(cfg) if cfg is not None else "lower the learning rate or set grad_clip"
            raise NonFiniteError(
                f"the model's '{name}' holds NaN/inf{where}: the training diverged. To fix: {hint}. "
                "Nothing was saved.",
                step=step,
                what=name,
            )


@dataclass
class TrainResult:
    """The trained model (on CPU only if it was trained there) and one record per epoch."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def fit(
    model: nn.Module,
    train: Loader,
    evals: dict[str, Loader] | None = None,
    config: TrainConfig | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Train a deep copy of `model`; the argument is not modified. See `fit_inplace` for the options."""
    return fit_inplace(copy.deepcopy(model), train, evals, config, **kwargs)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    on = device.type == "cuda" if cfg.amp == "auto" else bool(cfg.amp)
    if not on:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def _prepare_inputs(
    batch: Batch, device: torch.device, channels_last: bool
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    batch = batch.to(device, non_blocking=True)
    inputs = batch.inputs
    if channels_last and inputs[0].ndim == 4:
        inputs = (inputs[0].contiguous(memory_format=torch.channels_last), *inputs[1:])
    elif inputs[0].ndim == 4 and not inputs[0].is_contiguous():
        # the image loaders hand out NHWC-strided batches; on torch 2.13 CPU, training a pruned ResNet-20
        # (channel counts such as 7, 19, 37, 45) on such input corrupted the heap inside backward()
        # (double free / segfault, reproducible), while the same batches made contiguous train fine
        inputs = (inputs[0].contiguous(), *inputs[1:])
    return inputs, batch.target


def fit_inplace(
    model: nn.Module,
    train: Loader,
    evals: dict[str, Loader] | None = None,
    config: TrainConfig | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    teacher: nn.Module | None = None,
    eval_split: str = "val",
    callbacks: Sequence[EpochCallback] = (),
    ctx: DistContext | None = None,
    step_hook: StepHook | None = None,
) -> TrainResult:
    """Train `model` in place.

    `train` yields the global batch sharded for this rank; `evals[eval_split]` is evaluated every
    `config.eval_every` epochs (use a split held out of train, never test). With `run_dir`, metrics go
    to metrics.jsonl and a checkpoint to run_dir/checkpoint after each epoch; `resume=True` continues from
    it. `teacher` (with config.kd_alpha > 0) adds distillation from its logits. `callbacks` run after each
    epoch's checkpoint with (epoch, record). `step_hook` (compression methods) adds its `penalty()` to
    every step's loss, runs `after_step()` after each optimizer step and shows `status()` in the bar.
    """
    cfg = config or TrainConfig()
    evals = evals or {}
    ctx = ctx or init_distributed(cfg.device)
    device = ctx.device
    amp_dtype = _amp_dtype(cfg, device)
    channels_last = device.type == "cuda" if cfg.channels_last == "auto" else bool(cfg.channels_last)
    use_scaler = amp_dtype == torch.float16
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None

    seed_everything(cfg.seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if teacher is not None:
        teacher = teacher.to(device).eval()
        if cfg.kd_alpha == 0.0:
            raise ValueError("a teacher was given but TrainConfig.kd_alpha is 0: set kd_alpha > 0 to distil")
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = len(train)
    if steps_per_epoch == 0:
        raise ValueError("the training loader yields no batches (fewer examples than one batch?)")
    # fractional epochs (e.g. a short gated phase of 0.25 epochs) stop mid-epoch at the step count
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    if step_hook is not None:
        step_hook.begin(total_steps)

    ckpt_dir = Path(run_dir) / "checkpoint" if run_dir is not None else None
    logger = MetricsLogger(run_dir if ctx.is_main else None, cfg.tensorboard)
    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    if resume:
        if ckpt_dir is None or not has_checkpoint(ckpt_dir):
            raise FileNotFoundError(f"--resume given but there is no checkpoint in {ckpt_dir}")
        state = load_checkpoint(ckpt_dir, model)
        optimizer.load_state_dict(state.optimizer)
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        start_epoch, step, history = state.epoch, state.step, state.history
        logger.reset(history)
    elif ctx.is_main and run_dir is not None:
        logger.reset([])

    net: nn.Module = model
    if ctx.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # under DDP, BatchNorm uses the global batch's statistics, so N processes compute what one does
    synced_bn = global_batchnorm(model) if ctx.enabled else contextlib.nullcontext()
    synced_bn.__enter__()
    try:
        for epoch in range(start_epoch, n_epochs):
            seed_everything(epoch_seed(cfg.seed, epoch, ctx.rank))
            train.set_epoch(epoch)
            net.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.float64, device=device)
            seen = 0
            bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{n_epochs}",
                disable=not (cfg.progress and ctx.is_main),
                leave=False,
                dynamic_ncols=True,
            )
            t0 = time.perf_counter()
            for i, batch in enumerate(train):
                if step >= total_steps:
                    break
                lr = cosine_with_warmup(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                inputs, target = _prepare_inputs(batch, device, channels_last)
                autocast = (
                    torch.autocast(device.type, dtype=amp_dtype)
                    if amp_dtype is not None
                    else contextlib.nullcontext()
                )
                with autocast:
                    logits = net(*inputs)
                    teacher_logits = None
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_logits = teacher(*inputs)
                loss = training_loss(
                    logits,
                    target,
                    label_smoothing=cfg.label_smoothing,
                    teacher_logits=teacher_logits,
                    kd_alpha=cfg.kd_alpha,
                    kd_temperature=cfg.kd_temperature,
                )
                if step_hook is not None:
                    loss = loss + step_hook.penalty().to(loss.device)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    before = getattr(step_hook, "before_step", None)
                    if cfg.grad_clip is not None or before is not None:
                        scaler.unscale_(optimizer)  # hooks and clipping see true gradients
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    if before is not None:
                        before()
                    scaler.step(optimizer)
                    scaler.update()
                    loss_value = float(loss.detach())
                    if not math.isfinite(loss_value):
                        raise _diverged("loss", loss_value, step + 1, cfg)
                else:
                    loss_value = float(loss.detach())
                    if not math.isfinite(loss_value):
                        raise _diverged("loss", loss_value, step + 1, cfg)
                    loss.backward()
                    grad_norm = float(
                        nn.utils.clip_grad_norm_(
                            model.parameters(), cfg.grad_clip if cfg.grad_clip is not None else math.inf
                        )
                    )
                    if not math.isfinite(grad_norm):
                        raise _diverged("gradient norm", grad_norm, step + 1, cfg)
                    before = getattr(step_hook, "before_step", None)
                    if before is not None:  # optional: edit gradients (group regularisers of peers)
                        before()
                    optimizer.step()
                if step_hook is not None:
                    step_hook.after_step(loss_value)
                step += 1
                n = len(target)
                loss_sum += loss.detach().double() * n
                correct += (logits.detach().argmax(-1) == target).sum().double()
                seen += n
                if bar.disable is False and (i % 10 == 0 or i == steps_per_epoch - 1):
                    elapsed = time.perf_counter() - t0
                    extra = step_hook.status() if step_hook is not None else {}
                    bar.set_postfix(
                        loss=f"{loss_sum.item() / seen:.3f}",
                        acc=f"{correct.item() / seen:.3f}",
                        ips=f"{seen * ctx.world_size / max(elapsed, 1e-9):.0f}",
                        **{k: f"{v:.3g}" for k, v in extra.items()},
                        refresh=False,
                    )
                bar.update(1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time = time.perf_counter() - t0
            bar.close()
            tot_loss, tot_correct, tot_seen = all_reduce_sum(
                [loss_sum.item(), correct.item(), float(seen)], ctx
            )
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": step,
                "lr": lr,
                "train_loss": tot_loss / tot_seen,
                "train_accuracy": tot_correct / tot_seen,
                "train_time_s": train_time,
                "train_images_per_s": tot_seen / train_time,
            }
            if eval_split in evals and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == n_epochs):
                t1 = time.perf_counter()
                m = evaluate(
                    model,
                    evals[eval_split],
                    device=device,
                    ctx=ctx,
                    amp_dtype=amp_dtype,
                    channels_last=channels_last,
                )
                record.update({f"{eval_split}_loss": m["loss"], f"{eval_split}_accuracy": m["accuracy"]})
                record["eval_time_s"] = time.perf_counter() - t1
            history.append(record)
            check_finite_weights(model, step, cfg)
            if ctx.is_main:
                if ckpt_dir is not None and (
                    (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == n_epochs
                ):
                    state = TrainingState(
                        epoch + 1,
                        step,
                        history,
                        optimizer.state_dict(),
                        scaler.state_dict() if scaler else None,
                    )
                    save_checkpoint(ckpt_dir, model, state, extra={"train_config": cfg.to_json()})
                logger.log(record, step)
                if cfg.log_epochs:  # a line per epoch even without a bar, so logs show the loss
                    tqdm.write(_summary(record, eval_split))
            barrier(ctx)
            for cb in callbacks:
                cb(epoch + 1, record)
    finally:
        synced_bn.__exit__(None, None, None)
        logger.close()
    return TrainResult(model, history)


def _summary(record: dict[str, Any], split: str) -> str:
    parts = [
        f"epoch {record['epoch']}",
        f"loss {record['train_loss']:.4f}",
        f"acc {record['train_accuracy']:.4f}",
    ]
    if f"{split}_accuracy" in record:
        parts.append(f"{split}_acc {record[f'{split}_accuracy']:.4f}")
    parts.append(f"{record['train_images_per_s']:.0f} ex/s")
    return "  ".join(parts)
