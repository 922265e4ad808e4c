"""`geta`: joint structured pruning and mixed-precision quantization-aware training (GETA, CVPR 2025),
to a netdiet budget, with the bit bounds enforced after every step.

Every conv/linear weight and input gets a learned-bit quantizer (`quant.LearnedBitQuantizer`: step d and
range q_m, bits b = log2(q_m / d + 1) + 1 signed, one less unsigned) and the optimizer trains them with
the weights. The training run is split into four stages (fractions of the steps `begin` announces):

1. warm-up: quantizers start at `init_bits` and learn; activation ranges are first observed on
   `observe_steps` real batches (99.9th percentile of |x|, averaged), then quantized;
2. projection: the upper bit bound falls linearly from `init_bits` to the final b_max;
3. joint: `pruning_periods` periods; at the start of each, units are ranked by saliency and the least
   salient ones, enough to bring the cost k/K of the way from dense to the budget, become redundant
   (once redundant, always: the set only grows); within the period their weights are forgotten: set to
   (1 - t/L) times their value when chosen, so they reach exactly zero at its end, and the optimizer's
   updates on them are discarded (the gradient is projected out of the redundant groups);
4. cool-down: bits are frozen at their whole values (b_min = b_max = ceil(b) per quantizer), the
   redundant units stay zero, and the weights adapt.

After every optimizer step each quantizer is projected into [b_min, b_max(t)] of its kind (weights and
activations have their own bounds) and then checked; b_max(t) never drops below b_min.

The budget: pruning is priced with every layer at its stage's b_max (the largest bit width it can end
at), so the exported assignment - whole bits, at most b_max - meets the budget whatever bits the
quantizers settle on. Bits and pruning share the reduction: the final weight b_max is lowered so it takes
`bit_share` of it (in log cost); if the budget still cannot be met at the smallest widths, the final
weight b_max is lowered one bit at a time, down to its b_min, then the activations'.

Saliency of a unit: the geometric mean of its group-normalised weight norm and first-order Taylor score
|sum x * dL/dx| (averaged over the steps so far), times (1 - cos / 2) where cos is the mean cosine
between the unit's weights and their gradient: a gradient pointing along the weights means descent is
already shrinking them (GETA/HESSO combine magnitude, cosine and Taylor the same way in spirit).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from netdiet.errors import ConfigError, NonFiniteError
from netdiet.methods.base import Method
from netdiet.methods.context import MethodContext
from netdiet.methods.importance import per_group_normalised, unit_norms
from netdiet.methods.readoff import minimum_cost, read_off
from netdiet.methods.registry import register_method
from netdiet.quant.learned import attach_learned_bits, check_bit_bounds, float_tensor
from netdiet.space import Assignment, knob_id

STAGES = ("warmup", "projection", "joint", "cooldown")
BOUND_EPS = 1e-3  # float32 log2 of a projected step


@dataclass
class GetaConfig:
    """Bit bounds are (b_min, b_max) per kind; `init_bits` is where quantizers start (GETA starts
    high and projects down). The default activation bounds (8, 8) keep the result runnable by ONNX
    Runtime's int8 kernels; lower them for a size or BOPs budget that allows sub-8-bit activations.
    `bit_share`: the part of the budget's reduction (in log cost) taken by lowering the final weight
    b_max, the rest by pruning. Measured on ResNet-20 at bops=0.05 (3 epochs): with 0 (b_max stays 8, all
    by pruning, 77% of FLOPs kept) geta reached 73.0% test; l1l2 learning bits found 7-8 bits and 90% of
    FLOPs at 76.4%; 0.5 lowers b_max to 7 there."""

    weight_bits: tuple[int, int] = (4, 8)
    act_bits: tuple[int, int] = (8, 8)
    init_bits: int = 16
    warmup_fraction: float = 0.1
    projection_fraction: float = 0.2
    joint_fraction: float = 0.5
    pruning_periods: int = 5
    observe_steps: int = 8
    tolerance: float = 0.01
    bit_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.bit_share <= 1:
            raise ConfigError(f"bit_share must be in [0, 1], got {self.bit_share}")
        self.weight_bits = tuple(int(b) for b in self.weight_bits)  # type: ignore[assignment]
        self.act_bits = tuple(int(b) for b in self.act_bits)  # type: ignore[assignment]
        for name, (low, high) in (("weight_bits", self.weight_bits), ("act_bits", self.act_bits)):
            check_bit_bounds(name, (low, high))
            if high > self.init_bits:
                raise ConfigError(f"{name} b_max {high} is above init_bits {self.init_bits}")
        if not 2 <= self.init_bits <= 16:
            raise ConfigError(f"init_bits must be in [2, 16], got {self.init_bits}")
        fractions = (self.warmup_fraction, self.projection_fraction, self.joint_fraction)
        if any(f < 0 for f in fractions) or self.joint_fraction <= 0 or sum(fractions) > 1:
            raise ConfigError(
                "stage fractions must be >= 0 (joint > 0) and sum to at most 1 (the rest is cool-down), got "
                f"warmup {self.warmup_fraction}, projection {self.projection_fraction}, joint {self.joint_fraction}"
            )
        if self.pruning_periods < 1:
            raise ConfigError(f"pruning_periods must be >= 1, got {self.pruning_periods}")
        if self.observe_steps < 1:
            raise ConfigError(f"observe_steps must be >= 1, got {self.observe_steps}")
        if not 0 < self.tolerance < 0.5:
            raise ConfigError(f"tolerance must be in (0, 0.5), got {self.tolerance}")


@register_method("geta")
class Geta(Method):
    Config = GetaConfig
    config: GetaConfig
    needs_training = True
    chooses_bits = True
    trains_quantized = True
    default_bits = 8

    def __init__(self, model: nn.Module, context: MethodContext, config: GetaConfig | None = None) -> None:
        super().__init__(model, context, config)
        cfg = self.config
        self.model = copy.deepcopy(model)
        self.weight_sites = {k.site: k.id for k in context.knobs if k.kind == "weight_bits"}
        self.act_sites = {k.site: k.id for k in context.knobs if k.kind == "act_bits"}
        if not self.weight_sites:
            raise ConfigError("geta quantizes conv and linear layers; the model has none with a bit knob")
        self.weight_q, self.act_q = attach_learned_bits(
            self.model, self.weight_sites, self.act_sites, float(cfg.init_bits)
        )
        self.final_bounds = self._final_bounds()
        self.total_steps: int | None = None
        self.steps = 0
        self.redundant: dict[str, set[int]] = {g.name: set() for g in self.space.groups}
        self._fading: list[
            tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]
        ] = []  # (param, dim, pos, start)
        self._period = -1
        self._period_start = 0
        self._frozen: dict[str, float] | None = None
        self.taylor: dict[str, torch.Tensor] = {}
        self.cosine: dict[str, torch.Tensor] = {}
        self.stat_steps = 0
        self.trace: list[dict[str, Any]] = []
        self.max_bound_violation = 0.0

    # ----- budget -----------------------------------------------------------------------------------
    def _bits_assignment(self, w_bits: float, a_bits: float) -> Assignment:
        values: dict[str, Any] = {kid: int(w_bits) for kid in self.weight_sites.values()}
        values.update({kid: int(a_bits) for kid in self.act_sites.values()})
        return Assignment(values)

    def _context_at(self, w_bits: float, a_bits: float) -> MethodContext:
        """The context with every layer priced at these bits (what pruning is priced against)."""
        ctx = copy.copy(self.context)
        ctx.fixed = self._bits_assignment(w_bits, a_bits)
        return ctx

    def _final_bounds(self) -> dict[str, tuple[int, int]]:
        """b_max per kind at the end of the projection: the configured one, lowered where the budget
        cannot be met with it even at the smallest widths."""
        (w_min, w_max), (a_min, a_max) = self.config.weight_bits, self.config.act_bits
        while True:
            smallest = minimum_cost(self._context_at(w_max, a_max), [])
            if smallest <= self.target:
                break
            if w_max > w_min:
                w_max -= 1
            elif a_max > a_min:
                a_max -= 1
            else:
                self.check_feasible(smallest)
        w_max = self._shared_weight_bound(w_min, w_max, a_max)
        return {"weight": (w_min, w_max), "act": (a_min, a_max)}

    def _shared_weight_bound(self, w_min: int, w_max: int, a_max: int) -> int:
        """The final weight b_max that takes `bit_share` of the reduction the budget asks for (in log
        cost, from the full model at the configured bits), leaving the rest to pruning: the largest
        w whose full-width cost is within dense * (target / dense) ** bit_share. Where bits do not change
        the metric (a FLOPs budget) or the share is 0, the configured b_max stays."""
        share = self.config.bit_share
        dense = float(self._context_at(w_max, a_max).price(None))
        if share <= 0 or dense <= self.target:
            return w_max
        goal = dense * (self.target / dense) ** share
        for w in range(w_max, w_min - 1, -1):
            cost = float(self._context_at(w, a_max).price(None))
            if cost >= dense * (1 - 1e-9) and w == w_max:
                if float(self._context_at(w_min, a_max).price(None)) >= dense * (1 - 1e-9):
                    return w_max  # the metric does not depend on the bits
            if cost <= goal * (1 + 1e-9):
                return w
        return w_min

    # ----- schedule ---------------------------------------------------------------------------------
    def begin(self, total_steps: int) -> None:
        if total_steps < 1:
            raise ConfigError(f"geta needs at least one training step, got total_steps={total_steps}")
        self.total_steps = int(total_steps)

    def _bounds(self) -> tuple[int, int, int, int]:
        """(warm-up end, projection end, joint end, total) in steps."""
        assert self.total_steps is not None
        t, c = self.total_steps, self.config
        w = int(round(c.warmup_fraction * t))
        p = w + int(round(c.projection_fraction * t))
        j = max(p + 1, p + int(round(c.joint_fraction * t))) if t > p else t
        return w, p, min(j, t), t

    def stage(self, step: int | None = None) -> str:
        """The stage of optimizer step `step` (1-based; default the next one)."""
        step = self.steps + 1 if step is None else step
        w, p, j, _ = self._bounds()
        if step <= w:
            return "warmup"
        if step <= p:
            return "projection"
        if step <= j:
            return "joint"
        return "cooldown"

    def b_max(self, kind: str, step: int | None = None) -> float:
        """The upper bit bound after step `step` for `kind` ("weight" or "act"); never below b_min."""
        step = self.steps if step is None else step
        low, final = self.final_bounds[kind]
        start = float(self.config.init_bits)
        w, p, _, _ = self._bounds()
        if step <= w:
            value = start
        elif step >= p:
            value = float(final)
        else:
            value = start + (final - start) * (step - w) / max(1, p - w)
        return max(float(low), value)

    def period_of(self, step: int) -> int:
        """Which pruning period step `step` is in (-1 before the joint stage)."""
        _, p, j, _ = self._bounds()
        if step <= p:
            return -1
        length = max(1, math.ceil((j - p) / self.config.pruning_periods))
        return min(self.config.pruning_periods - 1, (step - p - 1) // length)

    def _period_length(self) -> int:
        _, p, j, _ = self._bounds()
        return max(1, math.ceil((j - p) / self.config.pruning_periods))

    # ----- training ---------------------------------------------------------------------------------
    def penalty(self) -> torch.Tensor:
        if self.total_steps is None:
            raise ConfigError(
                "geta schedules its stages over the training run and needs its length: call "
                "compressor.begin(total_steps) before training (netdiet.compress and the trainer do this)"
            )
        return torch.zeros(())  # geta adds no loss term: its decisions are projections made in step()

    def step(self, loss: float | None = None) -> None:
        if self.total_steps is None:
            self.penalty()  # raises the named error
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteError(
                f"geta: non-finite loss ({loss}) at step {self.steps + 1}; lower the learning rate or check "
                "the data; nothing was exported",
                step=self.steps + 1,
                what="loss",
                value=loss,
            )
        self.steps += 1
        stage = self.stage(self.steps)
        if stage != "cooldown":
            self._accumulate_saliency()
        if self.steps >= min(self.config.observe_steps, max(1, self._bounds()[0])):
            self._activate_inputs()  # ranges observed on the first batches (fewer if warm-up is shorter)
        if stage == "joint":
            period = self.period_of(self.steps)
            if period != self._period:
                self._start_period(period)
            self._forget()
        elif stage == "cooldown":
            if self._period < self.config.pruning_periods - 1:  # a run too short to reach every period
                self._start_period(self.config.pruning_periods - 1)
            self._forget(final=True)
            if self._frozen is None:
                self._frozen = {n: float(self._whole_bits(n, b)) for n, b in self.bit_widths().items()}
        self._project()
        self._record(loss, stage)

    @torch.no_grad()
    def _activate_inputs(self) -> None:
        for q in self.act_q.values():
            if not q.active:
                q.activate(float(self.config.init_bits))

    @torch.no_grad()
    def _project(self) -> None:
        """Every quantizer into its bounds for this step; then checked (a violated bound is a bug)."""
        for kind, quantizers in (("weight", self.weight_q), ("act", {k: v.q for k, v in self.act_q.items()})):
            low = float(self.final_bounds[kind][0])
            high = self.b_max(kind)
            for name, q in quantizers.items():
                if self._frozen is not None:
                    b = self._frozen[f"{kind}:{name}"]
                    q.project(b, b)
                else:
                    q.project(low, high)
                bits = q.bits()
                if not torch.isfinite(bits).all():
                    raise NonFiniteError(
                        f"geta: non-finite bit width of {kind} quantizer {name}", what="bits"
                    )
                over = max(float(bits.max()) - high, low - float(bits.min()), 0.0)
                self.max_bound_violation = max(self.max_bound_violation, over)
                if over > BOUND_EPS:
                    raise AssertionError(
                        f"{kind} quantizer {name}: bits {bits.tolist()} outside [{low}, {high}]"
                    )

    def _whole_bits(self, name: str, bits: float) -> int:
        """The whole bit width a quantizer exports at: ceil, within its final bounds (float32 arithmetic
        puts a projected 8 at 8.00001)."""
        low, high = self.final_bounds[name.split(":", 1)[0]]
        return int(min(high, max(low, math.ceil(bits - 1e-3))))

    def bit_widths(self) -> dict[str, float]:
        """Current (fractional) bit width of every quantizer, keyed 'weight:<param>' / 'act:<layer>'."""
        with torch.no_grad():
            out = {f"weight:{n}": float(q.bits().max()) for n, q in self.weight_q.items()}
            out.update({f"act:{n}": float(q.q.bits().max()) for n, q in self.act_q.items()})
        return out

    # ----- saliency ---------------------------------------------------------------------------------
    def _owner(self, param: str) -> tuple[nn.Module, str]:
        path, _, attr = param.rpartition(".")
        return (self.model.get_submodule(path) if path else self.model), attr

    def _float_param(self, param: str) -> torch.Tensor | None:
        """The trained float tensor behind `param` (the parametrization's original where quantized)."""
        return float_tensor(self.model, param)

    @torch.no_grad()
    def _accumulate_saliency(self) -> None:
        self.stat_steps += 1
        for group in self.space.groups:
            xg = torch.zeros(group.size, dtype=torch.float64)
            xx = torch.zeros(group.size, dtype=torch.float64)
            gg = torch.zeros(group.size, dtype=torch.float64)
            for member in group.members:
                t = self._float_param(member.param)
                if t is None or t.grad is None:
                    continue
                idx = self.space.member_units(member, group)
                valid = idx >= 0
                x = t.detach().double().movedim(member.dim, 0).reshape(t.shape[member.dim], -1)
                g = t.grad.detach().double().movedim(member.dim, 0).reshape(t.shape[member.dim], -1)
                xg.index_add_(0, idx[valid], (x * g).sum(1)[valid])
                xx.index_add_(0, idx[valid], (x * x).sum(1)[valid])
                gg.index_add_(0, idx[valid], (g * g).sum(1)[valid])
            cos = xg / (xx.sqrt() * gg.sqrt()).clamp_min(1e-30)
            name = group.name
            self.taylor[name] = self.taylor.get(name, torch.zeros_like(xg)) + xg.abs()
            self.cosine[name] = self.cosine.get(name, torch.zeros_like(xg)) + cos

    def saliency(self) -> dict[str, torch.Tensor]:
        """Per-unit keep scores, comparable across groups (see the module docstring)."""
        plain = self.weights_for_export(None)
        mag = per_group_normalised(unit_norms(self.space, plain))
        if not self.stat_steps:
            return mag
        tay = per_group_normalised({n: v / self.stat_steps for n, v in self.taylor.items()})
        out = {}
        for name, m in mag.items():
            score = (m * tay[name]).sqrt() if name in tay else m
            if name in self.cosine:
                score = score * (1.0 - 0.5 * (self.cosine[name] / self.stat_steps).clamp(-1, 1))
            out[name] = score
        return out

    # ----- pruning ----------------------------------------------------------------------------------
    def _pruning_context(self) -> MethodContext:
        return self._context_at(self.final_bounds["weight"][1], self.final_bounds["act"][1])

    def _start_period(self, period: int) -> None:
        """Grow the redundant set to reach k/K of the way from dense to the budget (priced at b_max)."""
        ctx = self._pruning_context()
        dense = float(ctx.price(None))
        k = period + 1
        target = dense - (k / self.config.pruning_periods) * max(0.0, dense - self.target)
        if k == self.config.pruning_periods:
            target = min(target, self.target)
        scores = self.saliency()
        for name, units in self.redundant.items():
            if units:
                scores[name] = scores[name].clone()
                scores[name][sorted(units)] = 0.0  # once redundant, always
        if target < dense:
            setting = read_off(ctx, scores, {}, target, self.config.tolerance, start="full", normalise=False)
            for name, kept in setting.keep.items():
                keep = set(kept.tolist())
                self.redundant[name] |= set(range(self.space.group(name).size)) - keep
        self._period = period
        self._period_start = self.steps - 1
        self._fading = self._redundant_slices()

    def _redundant_slices(self) -> list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]:
        """(tensor, dim, positions, their values now) for every redundant unit in every member."""
        out = []
        for group in self.space.groups:
            units = self.redundant[group.name]
            if not units:
                continue
            chosen = torch.zeros(group.size, dtype=torch.bool)
            chosen[sorted(units)] = True
            for member in group.members:
                t = self._float_param(member.param)
                if t is None:
                    continue
                idx = self.space.member_units(member, group)
                pos = torch.nonzero((idx >= 0) & chosen[idx.clamp_min(0)]).flatten()
                if pos.numel():
                    out.append((t, member.dim, pos, t.detach().index_select(member.dim, pos).clone()))
        return out

    @torch.no_grad()
    def _forget(self, final: bool = False) -> None:
        """Redundant units' weights to (1 - t/L) of their value when chosen: exactly zero at the period's
        end; the optimizer's update on them is discarded."""
        length = self._period_length()
        done = min(1.0, (self.steps - self._period_start) / length)
        factor = 0.0 if final else 1.0 - done
        for t, dim, pos, start in self._fading:
            t.index_copy_(dim, pos, start * factor)

    # ----- records ----------------------------------------------------------------------------------
    def _record(self, loss: float | None, stage: str) -> None:
        bits = self.bit_widths()
        w = [v for k, v in bits.items() if k.startswith("weight:")]
        a = [v for k, v in bits.items() if k.startswith("act:")]
        entry: dict[str, Any] = {
            "step": self.steps,
            "stage": stage,
            "b_max_weight": self.b_max("weight"),
            "b_max_act": self.b_max("act"),
            "mean_weight_bits": sum(w) / max(1, len(w)),
            "mean_act_bits": sum(a) / max(1, len(a)),
            "redundant_units": sum(len(u) for u in self.redundant.values()),
            "max_bound_violation": self.max_bound_violation,  # bits outside the bounds so far (0: none)
        }
        if loss is not None:
            entry["loss"] = float(loss)
        self.trace.append(entry)

    def status(self) -> dict[str, float]:
        last = self.trace[-1] if self.trace else {}
        return {
            "stage": float(STAGES.index(self.stage(max(1, self.steps)))),
            "b_max_weight": float(self.b_max("weight")),
            "mean_weight_bits": float(last.get("mean_weight_bits", self.config.init_bits)),
        }

    # ----- read-off and export ----------------------------------------------------------------------
    def read_off(self) -> Assignment:
        """Kept units (all but the redundant ones; a run that never reached the joint stage is cut to the
        budget now by saliency) and every layer's whole bits, at most b_max."""
        if self._period < self.config.pruning_periods - 1:
            self._start_period(self.config.pruning_periods - 1)
        values: dict[str, Any] = {}
        for group in self.space.groups:
            keep = sorted(set(range(group.size)) - self.redundant[group.name])
            values[knob_id("keep", group.name)] = torch.tensor(keep, dtype=torch.long)
        bits = self.bit_widths()
        for kind, sites in (("weight", self.weight_sites), ("act", self.act_sites)):
            low, high = self.final_bounds[kind]
            for site, kid in sites.items():
                values[kid] = self._whole_bits(f"{kind}:{site}", bits[f"{kind}:{site}"])
        return Assignment(values)

    def weights_for_export(self, assignment: Assignment | None) -> nn.Module:
        """A plain copy of the original architecture with the trained float weights (redundant units are
        already zero); the export quantizes it at the read-off bits."""
        state = {}
        for key in self.original.state_dict():
            module, attr = self._owner(key)
            if parametrize.is_parametrized(module, attr):
                plist: Any = module.parametrizations
                state[key] = plist[attr].original.detach().clone()
            else:
                state[key] = getattr(module, attr).detach().clone()
        plain = copy.deepcopy(self.original)
        plain.load_state_dict(state)
        return plain

    # ----- resume -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs besides the model and optimizer state: stage position, redundant
        sets, saliency sums, observed ranges, frozen bits."""
        return {
            "steps": self.steps,
            "total_steps": self.total_steps,
            "redundant": {n: sorted(u) for n, u in self.redundant.items()},
            "period": self._period,
            "period_start": self._period_start,
            "fading_start": [start.clone() for _, _, _, start in self._fading],
            "frozen": self._frozen,
            "taylor": {n: v.clone() for n, v in self.taylor.items()},
            "cosine": {n: v.clone() for n, v in self.cosine.items()},
            "stat_steps": self.stat_steps,
            "inputs": {
                n: (list(q.observed), q.negative, q.active, q.q.signed) for n, q in self.act_q.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.total_steps = state["total_steps"]
        self.redundant = {n: set(u) for n, u in state["redundant"].items()}
        self._period = int(state["period"])
        self.taylor = {n: v.clone() for n, v in state["taylor"].items()}
        self.cosine = {n: v.clone() for n, v in state["cosine"].items()}
        self.stat_steps = int(state["stat_steps"])
        self._frozen = state["frozen"]
        for n, saved in state["inputs"].items():
            self.act_q[n].load(saved)
        self._period_start = int(state["period_start"])
        slices = self._redundant_slices() if self._period >= 0 else []
        self._fading = [
            (t, d, p, start.clone()) for (t, d, p, _), start in zip(slices, state["fading_start"])
        ]
