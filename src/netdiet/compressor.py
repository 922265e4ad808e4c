"""`Compressor`: compression inside the user's own training loop.

    comp = netdiet.Compressor(model, example_inputs, budget=Budget(flops=0.5), method="l1l2",
                              total_steps=epochs * len(loader))
    opt = torch.optim.SGD(comp.model.parameters(), lr=0.01)     # train comp.model, a copy
    for x, y in loader:
        loss = F.cross_entropy(comp.model(x), y) + comp.penalty()
        opt.zero_grad(); loss.backward(); opt.step(); comp.step(loss.item())
    result = comp.export()                                      # slim model under the budget

The user's model is copied, never modified; the loop, optimizer and schedule stay the user's. The gates
are not in `comp.model.parameters()`: the compressor trains them itself in `step()`. `total_steps` (or
`comp.begin(total_steps)`) is the length of the loop: l1l2 spreads its schedule over it.

This facade sits beside the pipeline: it drives a method (stage 4) and then the exporter (stage 5), so
the methods themselves never import the export stage.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from netdiet.cost import price
from netdiet.cost.latency import LatencyModel, LatencyTable
from netdiet.errors import ConfigError, NonFiniteError
from netdiet.export import RECIPE_ATTR, export_assignment, mask_model
from netdiet.export.blocks import drop_blocks, return_shapes
from netdiet.export.handlers import quantize_exported
from netdiet.methods import Budget, Method, make_method, method_class
from netdiet.profiling import check_table_here
from netdiet.space import Assignment, Space, analyze
from netdiet.train.subnet_score import reestimate_batchnorm


@dataclass
class Exported:
    """The slim model and the numbers that prove what it is."""

    model: nn.Module
    assignment: Assignment
    factorized: dict[str, int]
    dense_cost: dict[str, float]
    cost: dict[str, float]
    budget: dict[str, float]
    recipe: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "dense": self.dense_cost,
            "compressed": self.cost,
            "ratio": {k: self.cost[k] / max(self.dense_cost[k], 1e-12) for k in self.cost},
            "kept": {k: int(v.numel()) for k, v in self.assignment.keep.items()},
            "factorized": dict(self.factorized),
        }


INT8_CHANNEL_MULTIPLE = 8


def _average_over_ranks(params: list[torch.Tensor], loss: float | None) -> float | None:
    """All-reduce (mean) the gradients of `params` and the loss over the process group."""
    world = dist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)
    if loss is None:
        return None
    value = torch.tensor([float(loss)], dtype=torch.float64)
    dist.all_reduce(value)
    return float(value.item()) / world


class Compressor:
    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        budget: Budget | str,
        method: str = "l1l2",
        *,
        exclude: Sequence[Any] = (),
        latency_table: LatencyTable | str | Path | None = None,
        force_table: bool = False,
        space: Space | None = None,
        total_steps: int | None = None,
        evaluator: Callable[[nn.Module], float] | None = None,
        bits: int | None = None,
        calibration: Iterable[Any] | None = None,
        **config: Any,
    ) -> None:
        """`latency_table` (a LatencyTable or a JSON path from `netdiet profile`) prices a latency budget;
        a table measured on another device or runtime is refused unless `force_table`. `space`: the
        analysis of `model` with these inputs and `exclude`, if the caller already has it.
        `evaluator`: a score of a model (higher is better, e.g. held-out accuracy) for methods that
        compare candidate assignments; they get it applied to the masked model of each candidate.
        `bits`: weight and activation bit width of every conv and linear (32: float; default the
        method's, 8 for a BOPs budget); below 32 the export is a fake-quantized model whose ranges are
        calibrated on `calibration` (input batches) and `netdiet.export.int8` writes it as int8 ONNX.
        `config`: options of the method's Config."""
        if isinstance(budget, str):
            budget = Budget.parse(budget)
        if not isinstance(budget, Budget):
            raise ConfigError(f"budget must be a netdiet.Budget or a string like 'flops=0.5', got {budget!r}")
        self.budget = budget
        self.space = space if space is not None else analyze(model, example_inputs, exclude=exclude)
        self.latency: LatencyModel | None = None
        if latency_table is not None:
            table = (
                latency_table if isinstance(latency_table, LatencyTable) else LatencyTable.load(latency_table)
            )
            check_table_here(table, force=force_table)
            self.latency = LatencyModel(self.space, table)
            int8 = bits is not None and int(bits) <= 8 or bits is None and budget.metric == "bops"
            if not self.latency.is_calibrated("int8" if int8 and self.latency.has_int8 else "fp32"):
                warnings.warn(
                    "the latency table is not calibrated for this model: predictions omit the per-model "
                    "overhead (run `netdiet profile` on this model, or netdiet.compress, which calibrates)",
                    stacklevel=2,
                )
        self._evaluator = evaluator
        self.evaluations = 0  # candidates scored (search methods), and the seconds that took
        self.evaluation_s = 0.0
        self.search_s = 0.0  # seconds in the method's read-off
        chooses_bits = method_class(method).learns_bits(config)
        if chooses_bits and bits is not None:
            raise ConfigError(
                f"method '{method}' learns every layer's bit width itself; leave bits unset and give its "
                "bounds in its config (e.g. weight_bits=(4, 8), act_bits=(8, 8))"
            )
        if bits is None:
            # a method that learns bits gives every layer its own (at most 8 here); 8 marks "quantized"
            bits = 8 if budget.metric == "bops" or chooses_bits else method_class(method).default_bits
        self.bits = int(bits)
        self.calibration = calibration
        uniform = self.bits < 32 and not chooses_bits
        fixed = Assignment.uniform_bits(self.space.knobs, self.bits) if uniform else Assignment()
        multiples: dict[str, int] = {}
        if self.bits <= 8 and self.latency is not None and budget.needs_latency:
            # priced from the table's int8 timings: round to the multiples the int8 kernels measured to pay
            multiples = self.latency.group_multiples("int8" if self.latency.has_int8 else "fp32")
        elif self.bits <= 8 and self.latency is None:
            # int8 kernels want channel counts in multiples of 8: on ONNX Runtime CPU a ResNet-20 at half
            # width ran 2.58x faster than dense fp32 in int8 with counts 8/16/32, 1.96x with 5/13/29 (which
            # are fewer FLOPs, and 2.19x in fp32)
            m = INT8_CHANNEL_MULTIPLE
            multiples = {g.name: m for g in self.space.groups if g.size >= 2 * m and g.size % m == 0}
        self.method: Method = make_method(
            method,
            model,
            self.space,
            budget,
            latency=self.latency,
            evaluator=self._evaluate if evaluator is not None else None,
            fixed=fixed,
            multiples=multiples,
            **config,
        )
        if total_steps is not None:
            self.begin(total_steps)

    def _evaluate(self, assignment: Assignment) -> float:
        """The user's evaluator on the masked model of a candidate (dropped units zeroed: exact, and no
        export per candidate)."""
        assert self._evaluator is not None
        t0 = time.perf_counter()
        source = self.method.weights_for_export(None)
        masked = mask_model(self.space, assignment.keep, source=source).eval()
        dropped = [path for path, v in assignment.blocks.items() if int(v) == 0]
        if dropped:  # a candidate without some blocks is scored without them
            drop_blocks(masked, return_shapes(masked, dropped, self.space.example_inputs))
        bits = {k: v for k, v in assignment.items() if k.startswith(("weight_bits:", "act_bits:"))}
        if any(int(v) < 32 for v in bits.values()):  # a mixed-precision candidate is scored quantized
            if not self.calibration:
                raise ConfigError(
                    "scoring candidates with bits needs real input batches to set activation ranges: pass "
                    "calibration= (netdiet.compress does)"
                )
            calibration = list(self.calibration)
            # statistics of the sub-network, then folded into its convs: the scorer finds no BN left
            reestimate_batchnorm(masked, calibration)
            masked = quantize_exported(self.space, Assignment(bits), masked, calibration, verify=False).eval()
        with torch.no_grad():
            score = float(self._evaluator(masked))
        self.evaluations += 1
        self.evaluation_s += time.perf_counter() - t0
        if not math.isfinite(score):
            raise NonFiniteError(f"the evaluator returned {score} for a candidate sub-network")
        return score

    def search_cost(self) -> dict[str, float | int]:
        """What choosing the knobs cost: seconds in the method's read-off (the whole search for amc and
        evolution), of which scoring candidates, and how many candidates were scored."""
        return {
            "search_s": self.search_s,
            "evaluations": self.evaluations,
            "evaluation_s": self.evaluation_s,
        }

    def begin(self, total_steps: int) -> None:
        """Tell the method how many optimizer steps the training loop will make."""
        self.method.begin(total_steps)

    @property
    def method_steps(self) -> int:
        """Steps the method has been stepped so far (0 for one-shot methods)."""
        return int(getattr(self.method, "steps", 0))

    @property
    def needs_training(self) -> bool:
        return self.method.needs_training

    @property
    def model(self) -> nn.Module:
        """The model to train (a gated copy for l1l2; the model itself for one-shot baselines)."""
        return self.method.model

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """`optimizer` with the method stepped after each of its steps (see netdiet.wrapped_optimizer);
        LR schedulers built on the returned optimizer keep working."""
        from netdiet.wrapped_optimizer import CompressingOptimizer

        return CompressingOptimizer(optimizer, self)

    def state_dict(self) -> dict[str, Any]:
        """The method's training state (stage, schedules, choices so far) for resuming a run mid-way,
        beside the model's and the optimizer's state dicts."""
        getter = getattr(self.method, "state_dict", None)
        if getter is None:
            raise ConfigError(
                f"method '{self.method.name}' cannot be resumed mid-run (it keeps no state_dict); restart "
                "its training phase, or let netdiet.compress resume after it (work_dir=)"
            )
        return {"method": self.method.name, "state": getter()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.method.name:
            raise ConfigError(
                f"this state is from method {state.get('method')!r}, the compressor runs '{self.method.name}'"
            )
        self.method.load_state_dict(state["state"])  # type: ignore[attr-defined]

    def penalty(self) -> torch.Tensor:
        """Add to the task loss before backward()."""
        return self.method.penalty()

    def step(self, loss: float | None = None) -> None:
        """Call right after the user's optimizer.step(); pass the step's loss to have it checked and logged.

        Under torch.distributed (torchrun), the method's own gradients and the loss are averaged over
        ranks first, so every rank takes the same gate step and exports the same architecture."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            loss = _average_over_ranks(self.method.own_parameters(), loss)
        self.method.step(loss)

    def status(self) -> dict[str, float]:
        out = {"target": self.method.target, "dense": self.method.dense}
        out.update(self.method.status())
        return out

    @property
    def trace(self) -> list[dict[str, Any]]:
        """Per-step records of the method (relaxed cost, target, lambda, loss), empty for one-shot methods."""
        return list(getattr(self.method, "trace", []))

    def export(
        self, verify: bool = True, quantize: bool = True, assignment: Assignment | None = None
    ) -> Exported:
        """Read off an assignment within the budget and return the slim, verified model.

        `quantize=False` leaves the bit knobs out of the exported model (they stay in the assignment
        and its price): for a pruned model that is fine-tuned in float first and quantized after
        (`quantize_exported`), since ranges calibrated on a just-pruned model fit no fine-tuned one.
        `assignment`: export this one (the method's knobs, e.g. a tightened read-off) instead of
        reading one off now."""
        method = self.method
        t0 = time.perf_counter()
        own = method.read_off() if assignment is None else Assignment(assignment)
        self.search_s += time.perf_counter() - t0
        source = method.weights_for_export(own)
        assignment = method.context.complete(own)
        shapes = Assignment(
            {k: v for k, v in assignment.items() if not k.startswith(("weight_bits:", "act_bits:"))}
        )
        slim, applied = export_assignment(
            self.space,
            assignment if quantize else shapes,
            source=source,
            verify=verify,
            calibration=self.calibration,
        )
        if not quantize:
            recipe = dict(getattr(slim, RECIPE_ATTR))
            recipe["assignment"] = assignment.to_json()
            setattr(slim, RECIPE_ATTR, recipe)
        factorized = dict(applied.get("ranks", {}))
        # a rank that does not pay is priced as the dense layer (min of the two), as the handler exports it
        final = price(self.space, assignment, latency=self.latency)
        dense = price(self.space, latency=self.latency)
        metrics = ["flops", "params", "weight_bytes", "bops"] + (["latency_ms"] if self.latency else [])
        recipe = dict(getattr(slim, RECIPE_ATTR))
        recipe["method"] = method.name
        recipe["budget"] = self.budget.to_dict()
        setattr(slim, RECIPE_ATTR, recipe)
        return Exported(
            model=slim,
            assignment=assignment,
            factorized=factorized,
            dense_cost={m: float(getattr(dense, m)) for m in metrics},
            cost={m: float(getattr(final, m)) for m in metrics},
            budget={method.metric: method.target},
            recipe=recipe,
        )
