"""The resumable state of a `compress()` call: what an interrupted run keeps so it can continue.

Phase boundaries, not steps: a gated phase is short and its controller state (integral, first-step
scale, Taylor accumulators) is not worth checkpointing, so a run interrupted inside it starts that
phase again (deterministically, so it reaches the same setting). Once the gated phase is over, the
slim model it exported is saved with everything the report needs about it (`gated/`); the fine-tune
then keeps the trainer's per-epoch checkpoint (`finetune/`), so a resumed call continues from the last
finished epoch and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from netdiet.atomic import atomic_write_json
from netdiet.compressor import Exported
from netdiet.errors import ConfigError
from netdiet.export import RECIPE_ATTR, load, save
from netdiet.space import Assignment

GATED_DIR = "gated"
FINETUNE_DIR = "finetune"
STATE_FILE = "state.json"
FORMAT = "netdiet.compress-state/2"  # 2: the choice is stored as an assignment of knob ids


def save_gated(
    work_dir: Path,
    exported: Exported,
    *,
    fingerprint: dict[str, Any],
    trace: list[dict[str, Any]],
    snapshots: list[dict[str, Any]],
    history: list[dict[str, Any]],
    compress_train_s: float,
    search_cost: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
) -> None:
    """Save the slim model of a finished gated phase; state.json is written last, so it marks completion."""
    where = work_dir / GATED_DIR
    save(exported.model, where, packed=False)  # resuming must continue from the latent float weights
    atomic_write_json(
        where / STATE_FILE,
        {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "assignment": exported.assignment.to_json(),
            "factorized": exported.factorized,
            "dense_cost": exported.dense_cost,
            "cost": exported.cost,
            "budget": exported.budget,
            "trace": trace,
            "snapshots": snapshots,
            "history": history,
            "compress_train_s": compress_train_s,
            "search_cost": search_cost or {},
            "search": search or {},
        },
    )


def load_gated(work_dir: Path, base_model: nn.Module, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The saved end of the gated phase, or None when the phase has not finished.

    Refuses a state made by a different call (model, budget, method, options, epochs, seed): resuming
    it would silently mix two runs."""
    import json

    file = work_dir / GATED_DIR / STATE_FILE
    if not file.is_file():
        return None
    state = json.loads(file.read_text())
    if state.get("format") != FORMAT:
        raise ConfigError(f"{file} is not a netdiet compress state; remove {work_dir} to start over")
    if state["fingerprint"] != fingerprint:
        changed = sorted(
            k
            for k in {**fingerprint, **state["fingerprint"]}
            if fingerprint.get(k) != state["fingerprint"].get(k)
        )
        raise ConfigError(
            f"the interrupted run in {work_dir} was started with other settings ({', '.join(changed)} differ); "
            "resume with the same settings, or start over (--overwrite) to discard it"
        )
    slim = load(work_dir / GATED_DIR, base_model)
    state["exported"] = Exported(
        model=slim,
        assignment=Assignment.from_json(state["assignment"]),
        factorized={k: int(v) for k, v in state["factorized"].items()},
        dense_cost=state["dense_cost"],
        cost=state["cost"],
        budget=state["budget"],
        recipe=dict(getattr(slim, RECIPE_ATTR, None) or {}),
    )
    return state
