"""The l1/l2 method: gates + relaxed counts + the engine's cost model as a differentiable surrogate.

Gates a >= 0 on every group and singular-value gates b on factorisable layers; the surrogate cost is
`netdiet.cost` evaluated at the relaxed counts S(a), S(b) (no second FLOPs formula: at a = 1 it is the
exact dense cost). The penalty lambda * surrogate / dense joins the task loss. Over the gated phase
(its length is given by `begin(total_steps)`) the relaxed cost tracks a target annealed from dense to
the budget, lambda steered by a controller (methods/controller.py); then the read-off setting is fixed
and the dropped units' gates fade to zero while the weights keep training, so the exported model is the
model that was trained. An exact greedy fix-up puts the exported cost in [budget - tolerance, budget].

With `depth=True` every droppable residual block gets a scalar gate g in [0, 1] too (the block's output is
lerp(input, output, g)), priced at g times the block's cost, so the same penalty trades layers against
widths; the lowest-gated blocks are dropped as far as the relaxed cost paid for them, and the widths are
read off with them dropped.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netdiet.cost import rank_pays
from netdiet.errors import ConfigError, NonFiniteError
from netdiet.methods.base import Method
from netdiet.methods.context import MethodContext
from netdiet.methods.controller import CostSchedule, PenaltyController, gate_lr_for
from netdiet.methods.gates import GateSet, attach_gates
from netdiet.methods.importance import IMPORTANCE, TaylorAccumulator, combine, unit_norms
from netdiet.methods.readoff import minimum_cost, read_off
from netdiet.methods.registry import register_method
from netdiet.methods.relaxed import relaxed_count
from netdiet.quant.learned import attach_learned_bits, check_bit_bounds
from netdiet.space import Assignment, knob_id

SNAPSHOTS = 6  # gate snapshots kept over the gated phase (for histograms in the report)


@dataclass
class L1L2Config:
    """`gate_lr` applies only to `gate_optimizer="adam"` (a floor: short gated phases raise it so gates can
    cross [0, 1] within the anneal); the default plain-gradient gates size their steps from the anneal.
    `anneal_fraction` / `harden_fraction`: parts of the gated phase spent moving the cost target to the
    budget and fading out the dropped units. `importance`: how units are ranked at read-off.
    `rewind` (default): export the learned setting on the *dense* model's weights, not the gated ones.
    Measured on ResNet-20 (docs/l1l2-dynamics.md): weights trained while gates move fine-tune worse than
    the dense weights cut to the same setting, so the gated phase is used to learn the allocation and the
    units, and the fine-tune starts from the trained model. Rewound weights are not low-rank, so rank gates
    are off with rewind; `rewind=False` keeps the gated weights (and low-rank where it pays).
    `depth`: gate every droppable residual block (`block` knobs) as well, so layers are traded against
    widths under the same penalty."""

    lowrank: bool = True
    gate_lr: float = 0.02
    anneal_fraction: float = 0.5
    harden_fraction: float | None = None  # None: 0.25 when the gated weights are kept, 0 with rewind
    importance: str = "combined"
    gate_optimizer: str = "sgd"
    rewind: bool = True
    freeze_weights: bool = False
    tolerance: float = 0.01
    # learned bits (the paper's bit gates as a learned bit width per layer, priced by the relaxed cost)
    learn_bits: bool = False
    weight_bits: tuple[int, int] = (4, 8)
    act_bits: tuple[int, int] = (8, 8)
    observe_steps: int = 8
    depth: bool = False

    def __post_init__(self) -> None:
        self.weight_bits = tuple(int(b) for b in self.weight_bits)  # type: ignore[assignment]
        self.act_bits = tuple(int(b) for b in self.act_bits)  # type: ignore[assignment]
        for name, (low, high) in (("weight_bits", self.weight_bits), ("act_bits", self.act_bits)):
            check_bit_bounds(name, (low, high))
        if self.observe_steps < 1:
            raise ConfigError(f"observe_steps must be >= 1, got {self.observe_steps}")
        if self.gate_lr <= 0:
            raise ConfigError(f"gate_lr must be > 0, got {self.gate_lr}")
        if not 0 < self.tolerance < 0.5:
            raise ConfigError(f"tolerance must be in (0, 0.5), got {self.tolerance}")
        if self.gate_optimizer not in ("sgd", "adam"):
            raise ConfigError(f"gate_optimizer must be 'sgd' or 'adam', got {self.gate_optimizer!r}")
        if self.importance not in IMPORTANCE:
            raise ConfigError(f"importance must be one of {IMPORTANCE}, got {self.importance!r}")
        if self.freeze_weights and not self.rewind:
            raise ConfigError(
                "freeze_weights=True needs rewind=True (frozen gated weights are the dense ones)"
            )
        if self.harden_fraction is None:
            # with rewind the gated weights are discarded, so fading units out under them buys nothing
            self.harden_fraction = 0.0 if self.rewind else 0.25
        CostSchedule(0.5, self.anneal_fraction, self.harden_fraction)  # validates the fractions


@register_method("l1l2")
class L1L2(Method):
    Config = L1L2Config
    config: L1L2Config
    needs_training = True
    # not raised (0): cutting a 39-step gated phase into 156 steps of 32 examples gained MobileNetV2 2.1
    # test points but cost ResNet-20 0.2-0.3 and ResNet-56 0.6-1.2 (3 seeds, docs/l1l2-dynamics.md)
    min_steps = 0

    @classmethod
    def learns_bits(cls, options: dict[str, Any]) -> bool:
        return bool(options.get("learn_bits", False))

    def __init__(self, model: nn.Module, context: MethodContext, config: L1L2Config | None = None) -> None:
        super().__init__(model, context, config)
        space = self.space
        self.model = copy.deepcopy(model)
        self.bits = LearnedBits(self, self.config) if self.config.learn_bits else None
        # latency tables time dense layers, not factorised pairs: under a latency budget a rank would be
        # priced as free, so singular-value gates are off there
        # rewound weights are not low-rank, so a factorised export of them could not be exact
        lowrank = self.config.lowrank and self.latency is None and not self.config.rewind
        lowrank = lowrank and self.bits is None  # a factorised weight has no single quantizer
        blocks = [k.site for k in context.knobs if k.kind == "block"] if self.config.depth else []
        if self.config.depth and not blocks:
            raise ConfigError(
                "l1l2: depth=True, but the model has no residual block that can be dropped whole "
                "(`netdiet.analyze(...).knobs_of('block')` is empty); leave depth off"
            )
        self.gates: GateSet = attach_gates(space, self.model, lowrank=lowrank, blocks=blocks)
        if self.bits is not None:
            self.bits.attach()
        if self.config.freeze_weights:
            # only the gates learn: the gated phase is a search over the dense weights it rewinds to
            for p in self.model.parameters():
                p.requires_grad_(False)
        lowest = _with_blocks(self.pricing_context(), dict.fromkeys(self.gates.block_names, 0))
        self.check_feasible(minimum_cost(lowest, self.gates.rank_names))
        if self.bits is not None:  # the schedule anneals from the full model at the largest bits
            self.dense = float(self.pricing_context("high").price())
        self.optimizer = torch.optim.Adam(self.gates.parameters(), lr=self.config.gate_lr)
        self.schedule = CostSchedule(
            self.target / self.dense, self.config.anneal_fraction, float(self.config.harden_fraction or 0.0)
        )
        self.controller = PenaltyController()
        self.taylor = TaylorAccumulator()
        self.total_steps: int | None = None
        self.steps = 0
        self.last_surrogate = self.dense
        self.trace: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []
        self.hard_setting: Assignment | None = None
        self._faded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # gate index -> (drop mask, value)
        self._block_fade: dict[int, tuple[float, float]] = {}  # block gate index -> (target, start value)
        self._pen_grads: list[torch.Tensor | None] | None = None
        self._lam_used = 0.0
        self._sgd_lr: dict[str, float] = {}  # part of the gates ("units", "blocks") -> step size
        self._last_penalty = 0.0

    # ----- training -------------------------------------------------------------------------------
    def begin(self, total_steps: int) -> None:
        """Plan the gated phase: `total_steps` optimizer steps (the training loop knows them)."""
        if total_steps < 1:
            raise ConfigError(f"the gated phase needs at least one step, got total_steps={total_steps}")
        self.total_steps = int(total_steps)
        if self.total_steps < self.min_steps:
            warnings.warn(
                f"l1l2's gated phase has {self.total_steps} steps; allocations learned in fewer than "
                f"{self.min_steps} were measured worse (docs/l1l2-dynamics.md). Use smaller batches or more "
                "steps for this phase (netdiet.compress cuts the batches, down to 32 examples).",
                UserWarning,
                stacklevel=2,
            )
        lr = gate_lr_for(self.schedule.anneal_steps(self.total_steps), self.config.gate_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._snapshot()

    @property
    def hardening(self) -> bool:
        return self.hard_setting is not None

    def relaxed_counts(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        counts = {name: relaxed_count(self.gates.group(name)) for name in self.gates.group_names}
        ranks = {w: relaxed_count(self.gates.rank(w)) for w in self.gates.rank_names}
        return counts, ranks

    def relaxed_blocks(self) -> dict[str, torch.Tensor]:
        """Each gated block at its gate: priced at that fraction of its cost."""
        return {path: self.gates.block(path)[0] for path in self.gates.block_names}

    def surrogate(self) -> torch.Tensor:
        counts, ranks = self.relaxed_counts()
        assignment = Assignment.of(keep=counts, ranks=ranks, blocks=self.relaxed_blocks())
        if self.bits is not None:
            assignment = Assignment({**assignment, **self.bits.relaxed()})
        value = self.context.price(assignment)
        return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))

    def pricing_context(self, at: str = "low") -> MethodContext:
        """The context the read-off prices with: with learned bits, every layer at its whole bits now
        (`at="now"`), its lowest (`"low"`: what is reachable) or highest (`"high"`: where it starts)."""
        if self.bits is None:
            return self.context
        ctx = copy.copy(self.context)
        ctx.fixed = self.bits.whole(at)
        return ctx

    def target_ratio(self) -> float:
        """The relaxed cost / dense the schedule asks for after the current step."""
        if self.total_steps is None:
            return self.schedule.budget_ratio
        return self.schedule.target_ratio(self.steps + 1, self.total_steps)

    def penalty(self) -> torch.Tensor:
        if self.total_steps is None:
            raise ConfigError(
                "l1l2 anneals its cost target over the gated phase and needs to know how long it is: call "
                "compressor.begin(total_steps) before training, or pass Compressor(..., total_steps=N) "
                "(netdiet.compress, the netdiet trainer and the HF callback do this for you)"
            )
        if self.hardening:
            with torch.no_grad():
                self.last_surrogate = float(self.surrogate())
            self._last_penalty = 0.0
            return torch.zeros(())
        ratio = self.surrogate() / self.dense
        self.last_surrogate = float(ratio.detach()) * self.dense
        params = list(self.gates.parameters())
        if self.bits is not None and ratio.requires_grad:
            self.bits.collect(ratio)
        if ratio.requires_grad:
            grads = torch.autograd.grad(ratio, params, retain_graph=True, allow_unused=True)
            if self._pen_grads is None:
                self._pen_grads = list(grads)
            else:  # gradient accumulation: several penalties per optimizer step
                self._pen_grads = [
                    a if b is None else (b if a is None else a + b) for a, b in zip(self._pen_grads, grads)
                ]
        self._lam_used = self.controller.lam
        self._last_penalty = self.controller.lam * float(ratio.detach())
        return self.controller.lam * ratio

    def own_parameters(self) -> list[torch.Tensor]:
        return list(self.gates.parameters())

    def step(self, loss: float | None = None) -> None:
        """After the weights' optimizer step: train the gates, steer lambda, fade dropped units."""
        self.steps += 1
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteError(
                _nonfinite_message("loss", loss, self.steps), step=self.steps, what="loss", value=loss
            )
        params = list(self.gates.parameters())
        pen = self._pen_grads or [None] * len(params)
        task: list[torch.Tensor] = []
        for p, g_pen in zip(params, pen):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            if not torch.isfinite(g).all():
                bad = float(g[~torch.isfinite(g)][0])
                raise NonFiniteError(
                    _nonfinite_message("gate gradient", bad, self.steps),
                    step=self.steps,
                    what="gate gradient",
                    value=bad,
                )
            task.append(g - self._lam_used * g_pen if g_pen is not None else g)
        if not self.hardening:
            if not self.controller.calibrated:
                t_norm = math.sqrt(sum(float(t.pow(2).sum()) for t in task))
                p_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in pen if g is not None))
                self.controller.calibrate(t_norm, p_norm)
            names = self.gates.group_names + self.gates.rank_names  # block gates have no units to rank
            self.taylor.add({n: p.detach() * t for n, p, t in zip(names, params[: len(names)], task)})
        with torch.no_grad():
            # singular-value gates move only under cost pressure: the task gradient on them is large and
            # noisy (the leading directions carry most of every layer), and letting it drift b perturbs
            # every weight matrix even where no factorisation will ever pay
            first_rank = len(self.gates.group_names)
            end_rank = first_rank + len(self.gates.rank_names)
            for i, (p, g_pen) in enumerate(zip(params, pen)):
                if first_rank <= i < end_rank and p.grad is not None:
                    p.grad = self._lam_used * g_pen if g_pen is not None else torch.zeros_like(p)
        if self.config.gate_optimizer == "adam":
            self.optimizer.step()
        else:
            self._sgd_step(params, pen)
        self.optimizer.zero_grad(set_to_none=True)
        self._pen_grads = None
        self.gates.project()
        if self.bits is not None:
            self.bits.step(self._lam_used, frozen=self.hardening)
        if self.total_steps is not None:
            if not self.hardening and self.steps >= self.schedule.harden_start(self.total_steps):
                self._start_hardening()
            if self.hardening:
                self._fade()
            else:
                self.controller.update(
                    self.last_surrogate / (self.dense * self.target_ratio_at(self.steps)),
                    dt=1.0 / self.schedule.anneal_steps(self.total_steps),
                )
        for p in params:
            if not torch.isfinite(p).all():
                raise NonFiniteError(
                    _nonfinite_message("gate", float("nan"), self.steps), step=self.steps, what="gate"
                )
        self._record(loss)

    @torch.no_grad()
    def _sgd_step(self, params: Sequence[torch.Tensor], pen: Sequence[torch.Tensor | None]) -> None:
        """Plain gradient steps, so a gate's speed is proportional to the pressure on it (lambda steers
        speed, not only direction, as it cannot under Adam's normalisation), at most `max_step` a step.
        Block gates get their own step size: a whole block's price dwarfs one unit's, and sizing the unit
        gates' steps by it would freeze them."""
        anneal = self.schedule.anneal_steps(self.total_steps or 1)
        max_step = 2.0 / anneal
        split = len(params) - len(self.gates.block_names)
        for part, ps, gs in (("units", params[:split], pen[:split]), ("blocks", params[split:], pen[split:])):
            if part not in self._sgd_lr:
                top = max((float(g.abs().max()) for g in gs if g is not None), default=0.0)
                self._sgd_lr[part] = (1.0 / anneal) / max(self.controller.scale * top, 1e-12)
            for p in ps:
                if p.grad is not None:
                    p.sub_((self._sgd_lr[part] * p.grad).clamp(-max_step, max_step))

    def target_ratio_at(self, step: int) -> float:
        assert self.total_steps is not None
        return self.schedule.target_ratio(step, self.total_steps)

    @property
    def lam(self) -> float:
        return self.controller.lam

    def status(self) -> dict[str, float]:
        return {
            "surrogate": self.last_surrogate,
            "lam": self.lam,
            "target_ratio": self.target_ratio(),
            "hardening": float(self.hardening),
        }

    # ----- hardening ------------------------------------------------------------------------------
    def _start_hardening(self) -> None:
        """Fix the setting now; from here the dropped units fade out while the weights adapt to it."""
        self.hard_setting = self._read_off_soft()
        pairs = [(self.gates.group(n), idx) for n, idx in self.hard_setting.keep.items()]
        pairs += [(self.gates.rank(w), idx) for w, idx in self.hard_setting.ranks.items()]
        ids = {id(p): i for i, p in enumerate(self.gates.parameters())}
        for gate, keep in pairs:
            drop = torch.ones_like(gate, dtype=torch.bool)
            drop[keep] = False
            self._faded[ids[id(gate)]] = (drop, gate.detach().clone())
        for path, kept in self.hard_setting.blocks.items():
            gate = self.gates.block(path)  # kept blocks grow back to whole, dropped ones fade out
            self._block_fade[ids[id(gate)]] = (float(kept), float(gate.detach()[0]))

    @torch.no_grad()
    def _fade(self) -> None:
        assert self.total_steps is not None
        factor = self.schedule.fade(self.steps, self.total_steps)
        params = list(self.gates.parameters())
        for i, (drop, start) in self._faded.items():
            params[i][drop] = start[drop] * factor
        for i, (target, begin) in self._block_fade.items():
            params[i].fill_(target + (begin - target) * factor)

    # ----- logging --------------------------------------------------------------------------------
    def _record(self, loss: float | None) -> None:
        entry = {
            "step": self.steps,
            "phase": "harden" if self.hardening else "anneal",
            "cost_ratio": self.last_surrogate / self.dense,
            "target_ratio": self.target_ratio_at(self.steps) if self.total_steps else None,
            "budget_ratio": self.schedule.budget_ratio,
            "lam": self.lam,
        }
        if loss is not None:
            entry["loss"] = float(loss)  # what the loop minimised: task loss + penalty
            entry["task_loss"] = float(loss) - self._last_penalty
        self.trace.append(entry)
        if self.total_steps:
            every = max(1, self.total_steps // (SNAPSHOTS - 1))
            if self.steps % every == 0 or self.steps == self.total_steps:
                self._snapshot()

    def _snapshot(self) -> None:
        counts, _ = self.relaxed_counts()
        self.snapshots.append(
            {
                "step": self.steps,
                "gates": {n: self.gates.group(n).detach().tolist() for n in self.gates.group_names},
                "relaxed_counts": {n: float(v.detach()) for n, v in counts.items()},
                "blocks": {p: float(v.detach()) for p, v in self.relaxed_blocks().items()},
            }
        )

    # ----- read-off -------------------------------------------------------------------------------
    def read_off(self) -> Assignment:
        """The hardened assignment if the gated phase got there; otherwise a read-off from the gates now."""
        if self.hard_setting is not None:
            return Assignment(self.hard_setting)
        return self._read_off_soft()

    def importance(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-unit scores (groups) and per-direction scores (ranks), comparable across groups."""
        folded = self.weights_for_export(None)
        magnitude: dict[str, torch.Tensor] = dict(unit_norms(self.space, folded))
        magnitude.update(self._rank_magnitude())
        scores = combine(self.config.importance, magnitude, self.taylor.mean())
        groups = {n: scores[n] for n in self.gates.group_names}
        ranks = {w: scores[w] for w in self.gates.rank_names}
        return groups, ranks

    def _read_off_soft(self) -> Assignment:
        """Counts from the relaxed counts S(a), S(b) (the allocation the gates learned); which units
        from `importance()`; then the exact fix-up into the budget window."""
        counts, ranks = self.relaxed_counts()
        start = {n: round(float(v.detach())) for n, v in counts.items()}
        start.update({w: round(float(v.detach())) for w, v in ranks.items()})
        scores, rank_scores = self.importance()
        blocks = self._read_off_blocks()
        # with learned bits: price widths at the whole bits reached; if those cannot meet the budget at
        # any width (the bits have not come down far enough), at the lowest bits
        choices = ["now", "low"] if self.bits is not None else ["now"]
        for at in choices:
            try:
                setting = read_off(
                    _with_blocks(self.pricing_context(at), blocks),
                    scores,
                    rank_scores,
                    self.target,
                    self.config.tolerance,
                    start_counts=start,
                    normalise=False,
                )
                break
            except ConfigError:
                if at == choices[-1]:
                    raise
        keep_counts = {name: int(idx.numel()) for name, idx in setting.keep.items()}
        for weight, kept in setting.ranks.items():
            if not rank_pays(self.space, weight, keep_counts, int(kept.numel())):
                # a dense layer costs the same at any rank: keep every direction, lose nothing
                setting.set(knob_id("rank", weight), torch.arange(rank_scores[weight].numel()))
        if self.bits is not None:
            for kid, value in self.bits.whole(at).items():
                setting.set(kid, value)
        for path, kept in blocks.items():
            setting.set(knob_id("block", path), kept)
        return setting

    def _read_off_blocks(self) -> dict[str, int]:
        """Blocks kept (1) or dropped (0): as many of the lowest-gated blocks as the relaxed cost paid
        for. A gate g priced its block at g of its cost, so the relaxed model removed sum (1 - g) c of
        block cost; the blocks are dropped in order of increasing gate while their cost fits in that (to
        the nearest block). Gates hovering near one half are common, so a fixed threshold would drop
        all or none of them."""
        if not self.gates.block_names:
            return {}
        context = self.pricing_context("now")
        full = float(context.price())
        gate = {p: float(self.gates.block(p).detach()[0]) for p in self.gates.block_names}
        cost = {p: full - float(_with_blocks(context, {p: 0}).price()) for p in gate}
        paid = sum((1.0 - g) * cost[p] for p, g in gate.items())
        blocks = dict.fromkeys(gate, 1)
        dropped = 0.0
        for path in sorted(gate, key=lambda p: (gate[p], p)):
            if any(path.startswith(d + ".") or d.startswith(path + ".") for d, v in blocks.items() if not v):
                continue  # nested in (or around) a dropped block: its cost is gone with it (or counted)
            if dropped + 0.5 * cost[path] > paid:
                break
            blocks[path] = 0
            dropped += cost[path]
        return blocks

    def _rank_magnitude(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for weight in self.gates.rank_names:
            info = self.space.param_info(weight)
            assert info is not None
            module = self.model.get_submodule(info.module_path) if info.module_path else self.model
            plists: Any = module.parametrizations
            originals = plists[info.attr]
            u, v = originals.original0.detach(), originals.original1.detach()
            b = self.gates.rank(weight).detach().abs()
            out[weight] = b * u.norm(dim=0) * v.norm(dim=1)
        return out

    def weights_for_export(self, setting: Assignment | None) -> nn.Module:
        """A plain copy of the original architecture holding the gated model's effective weights.

        With a setting, the gates of dropped units and directions are zeroed first (temporarily). The
        parametrizations are read, never removed: torch shares the parametrized class between a module
        and its deep copy, so removing them from a copy would break the model being trained.
        """
        if self.config.rewind and setting is not None:
            return copy.deepcopy(self.original)  # the learned setting on the dense model's weights
        saved = [p.detach().clone() for p in self.gates.parameters()]
        try:
            with torch.no_grad():
                if setting is not None:
                    for name, idx in setting.keep.items():
                        _zero_except(self.gates.group(name), idx)
                    for weight, idx in setting.ranks.items():
                        _zero_except(self.gates.rank(weight), idx)
                state = {key: _effective(self.model, key) for key in self.original.state_dict()}
        finally:
            with torch.no_grad():
                for p, value in zip(self.gates.parameters(), saved):
                    p.copy_(value)
        plain = copy.deepcopy(self.original)
        plain.load_state_dict(state)
        return plain


def _with_blocks(context: MethodContext, blocks: dict[str, Any]) -> MethodContext:
    """The context with these blocks fixed (kept or dropped) for every assignment it prices."""
    if not blocks:
        return context
    ctx = copy.copy(context)
    ctx.fixed = Assignment({**context.fixed, **Assignment.of(blocks=blocks)})
    return ctx


def _nonfinite_message(what: str, value: float, step: int) -> str:
    return (
        f"l1l2: non-finite {what} ({value}) at gated step {step}. The training diverged: lower the learning "
        "rate of the weights (TrainConfig.lr), add gradient clipping (TrainConfig.grad_clip), or check the "
        "data for NaN/inf; nothing was exported or saved."
    )


def _zero_except(gate: torch.Tensor, keep: torch.Tensor) -> None:
    mask = torch.zeros_like(gate, dtype=torch.bool)
    mask[keep] = True
    gate.masked_fill_(~mask, 0.0)


def _effective(model: nn.Module, key: str) -> torch.Tensor:
    path, _, attr = key.rpartition(".")
    owner = model.get_submodule(path) if path else model
    return getattr(owner, attr).detach().clone()


class LearnedBits:
    """l1l2's bit knobs: a learned-bit quantizer on every conv/linear weight and input of the gated model.

    The relaxed cost prices each layer at its current (fractional) bit width through leaf tensors, so the
    penalty's gradient reaches the bits and not the quantizers' steps directly (the steps of weights are
    ~1e-3, and a cost gradient on them would move the bits by whole units per step); the method then
    moves every bit width by a plain gradient step sized so it can cross [b_min, b_max] within the anneal,
    and projects it into its bounds. The task gradient trains the quantizers' steps and ranges through the
    user's optimizer, as in GETA. Hardening freezes them at whole bits; the read-off prices the widths
    at those bits, so the exported assignment meets the budget."""

    def __init__(self, method: L1L2, config: L1L2Config) -> None:
        self.method = method
        self.config = config
        knobs = method.context.knobs
        self.weight_sites = {k.site: k.id for k in knobs if k.kind == "weight_bits"}
        self.act_sites = {k.site: k.id for k in knobs if k.kind == "act_bits"}
        if not self.weight_sites:
            raise ConfigError("learn_bits: the model has no conv or linear layer with a bit knob")
        self.bounds = {"weight": config.weight_bits, "act": config.act_bits}
        self.leaves: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.lr: float | None = None
        self.steps = 0
        self.frozen: dict[str, int] | None = None

    def attach(self) -> None:
        start = float(max(self.config.weight_bits[1], self.config.act_bits[1]))
        self.weight_q, self.act_q = attach_learned_bits(
            self.method.model, self.weight_sites, self.act_sites, start
        )
        for q in self.weight_q.values():
            q.project(*self.bounds["weight"])

    def quantizers(self) -> list[tuple[str, str, Any]]:
        """(kind, knob id, LearnedBitQuantizer) for every bit knob."""
        out = [("weight", self.weight_sites[n], q) for n, q in self.weight_q.items()]
        out += [("act", self.act_sites[n], q.q) for n, q in self.act_q.items()]
        return out

    def relaxed(self) -> dict[str, torch.Tensor]:
        """Fresh leaves at the current bit widths (the surrogate's bit knobs)."""
        self.leaves = {
            kid: q.bits().detach().max().clone().requires_grad_(True) for _, kid, q in self.quantizers()
        }
        return dict(self.leaves)

    def collect(self, ratio: torch.Tensor) -> None:
        leaves = list(self.leaves.values())
        grads = torch.autograd.grad(ratio, leaves, retain_graph=True, allow_unused=True)
        for kid, g in zip(self.leaves, grads):
            if g is not None:
                self.grads[kid] = self.grads.get(kid, torch.zeros(())) + g.detach()

    @torch.no_grad()
    def step(self, lam: float, frozen: bool) -> None:
        self.steps += 1
        if self.steps == self.config.observe_steps:
            for q in self.act_q.values():
                q.activate(float(self.config.act_bits[1]))
        if frozen and self.frozen is None:
            self.frozen = {kid: int(v) for kid, v in self.whole("now").items()}
        schedule = self.method.schedule
        anneal = schedule.anneal_steps(self.method.total_steps or 1)
        for kind, kid, q in self.quantizers():
            low, high = self.bounds[kind]
            if self.frozen is not None:
                q.project(float(self.frozen[kid]), float(self.frozen[kid]))
                continue
            g = self.grads.get(kid)
            if g is not None and high > low:
                if self.lr is None:
                    top = max((float(v.abs()) for v in self.grads.values()), default=0.0)
                    self.lr = (1.0 / anneal) / max(self.method.controller.scale * top, 1e-12)
                max_step = 2.0 * (high - low) / anneal
                delta = float((self.lr * (high - low) * lam * g).clamp(-max_step, max_step))
                b = float(q.bits().detach().max()) - delta
                b = min(float(high), max(float(low), b))
                q.project(b, b)
            else:
                q.project(float(low), float(high))
        self.grads = {}

    def whole(self, at: str) -> Assignment:
        """Whole bits per knob: now (ceil of the current width), or every knob at its lowest/highest."""
        values: dict[str, Any] = {}
        for kind, kid, q in self.quantizers():
            low, high = self.bounds[kind]
            if at == "low":
                values[kid] = low
            elif at == "high":
                values[kid] = high
            elif self.frozen is not None:
                values[kid] = self.frozen[kid]
            else:
                values[kid] = int(min(high, max(low, math.ceil(float(q.bits().detach().max()) - 1e-3))))
        return Assignment(values)
