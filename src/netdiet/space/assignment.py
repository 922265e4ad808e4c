"""An assignment: values for some knobs of a space, keyed by knob id.

Knobs not named keep their dense value. A `keep` knob's value is the set of kept unit indices (a
LongTensor) or, for pricing, a count (int, float or 0-d tensor: relaxed counts for surrogates); a `rank`
knob's value is the kept singular directions (indices) or a count; a bit knob's value is a bit width
(int, or a float / tensor while it is being learned). The hard form serialises to JSON for the recipe.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

from netdiet.errors import InvalidKeepError
from netdiet.space.knobs import KNOB_KINDS, Knob, knob_id, split_id

if TYPE_CHECKING:
    from netdiet.space.space import Space

ASSIGNMENT_FORMAT = "netdiet.assignment/1"


def _is_count(v: Any) -> bool:
    return isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.dim() == 0)


class Assignment(Mapping[str, Any]):
    """Knob id -> value. Read as a mapping; `keep`, `ranks`, `weight_bits`, `act_bits` give one kind's
    values by site (the form the cost and export stages take)."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = {}
        for kid, value in (values or {}).items():
            split_id(kid)
            self._values[kid] = value

    @classmethod
    def of(
        cls,
        keep: Mapping[str, Any] | None = None,
        ranks: Mapping[str, Any] | None = None,
        weight_bits: Mapping[str, Any] | None = None,
        act_bits: Mapping[str, Any] | None = None,
        blocks: Mapping[str, Any] | None = None,
    ) -> Assignment:
        """From per-kind maps keyed by site (group name, weight name, layer name, block module path)."""
        values: dict[str, Any] = {}
        for kind, part in (
            ("keep", keep),
            ("rank", ranks),
            ("weight_bits", weight_bits),
            ("act_bits", act_bits),
            ("block", blocks),
        ):
            for site, value in (part or {}).items():
                values[knob_id(kind, site)] = value
        return cls(values)

    @classmethod
    def uniform_bits(cls, knobs: Iterable[Knob], bits: int) -> Assignment:
        """`bits` on every weight_bits and act_bits knob among `knobs` (e.g. `space.knobs`): int8 everywhere."""
        if not 2 <= int(bits) <= 32:
            raise InvalidKeepError(f"bits must be in [2, 32], got {bits}")
        return cls({k.id: int(bits) for k in knobs if k.kind in ("weight_bits", "act_bits")})

    # ----- mapping --------------------------------------------------------------------------------
    def __getitem__(self, kid: str) -> Any:
        return self._values[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        kinds = {k: len(self.part(k)) for k in KNOB_KINDS if self.part(k)}
        return f"Assignment({kinds})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Assignment):
            return NotImplemented
        return self.to_json() == other.to_json()

    def set(self, kid: str, value: Any) -> None:
        split_id(kid)
        self._values[kid] = value

    def with_values(self, values: Mapping[str, Any]) -> Assignment:
        """A copy with `values` set on top."""
        out = Assignment(self._values)
        for kid, value in values.items():
            out.set(kid, value)
        return out

    # ----- by kind --------------------------------------------------------------------------------
    def part(self, kind: str) -> dict[str, Any]:
        if kind not in KNOB_KINDS:
            raise ValueError(f"knob kind must be one of {KNOB_KINDS}, got {kind!r}")
        prefix = f"{kind}:"
        return {k[len(prefix) :]: v for k, v in self._values.items() if k.startswith(prefix)}

    @property
    def keep(self) -> dict[str, Any]:
        return self.part("keep")

    @property
    def ranks(self) -> dict[str, Any]:
        return self.part("rank")

    @property
    def weight_bits(self) -> dict[str, Any]:
        return self.part("weight_bits")

    @property
    def blocks(self) -> dict[str, Any]:
        """Block module path -> 1 (kept), 0 (dropped) or a relaxed value in between."""
        return self.part("block")

    @property
    def act_bits(self) -> dict[str, Any]:
        return self.part("act_bits")

    def counts(self) -> dict[str, Any]:
        """Knob id -> count (kept units or directions) or bit width: the form costs are priced from."""
        return {k: v if _is_count(v) else int(len(v)) for k, v in self._values.items()}

    # ----- validation and JSON --------------------------------------------------------------------
    def validate(self, space: Space) -> Assignment:
        """Check every id is a knob of `space` and every value lies in its domain; returns self."""
        knobs = space.knob_map
        for kid, value in self._values.items():
            knob = knobs.get(kid)
            if knob is None:
                kind, site = split_id(kid)
                near = [k for k in knobs if k.startswith(f"{kind}:")][:5]
                raise InvalidKeepError(f"'{kid}' is not a knob of this model; {kind} knobs are e.g. {near}")
            if knob.kind in ("keep", "rank") and not _is_count(value):
                idx = torch.as_tensor(value)
                if idx.dim() != 1 or idx.dtype not in (torch.int32, torch.int64):
                    raise InvalidKeepError(f"knob {kid}: expected a 1-d list of kept indices, got {value!r}")
                if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= knob.dense):
                    raise InvalidKeepError(f"knob {kid}: indices must lie in [0, {knob.dense})")
                if torch.unique(idx).numel() != idx.numel():
                    raise InvalidKeepError(f"knob {kid}: kept indices repeat")
                knob.check(idx.numel())
            else:
                v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                if v == int(v):
                    knob.check(int(v))
                elif not 0.0 <= v <= knob.dense:  # a relaxed value: only its range is checked
                    raise InvalidKeepError(f"knob {kid}: relaxed value {v} is outside [0, {knob.dense}]")
        return self

    def to_json(self) -> dict[str, Any]:
        """The hard assignment as JSON: index lists for keep/rank knobs, ints for bit knobs."""
        values: dict[str, Any] = {}
        for kid in sorted(self._values):
            value = self._values[kid]
            if isinstance(value, torch.Tensor):
                if value.dim() == 0:
                    values[kid] = int(value)
                else:
                    values[kid] = [int(i) for i in value.tolist()]
            elif isinstance(value, (list, tuple)):
                values[kid] = [int(i) for i in value]
            else:
                if float(value) != int(value):
                    raise InvalidKeepError(
                        f"knob {kid} holds a relaxed value {value}; only hard assignments serialise"
                    )
                values[kid] = int(value)
        return {"format": ASSIGNMENT_FORMAT, "values": values}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], space: Space | None = None) -> Assignment:
        """Inverse of `to_json`; with `space`, also validated against its knobs."""
        if not isinstance(data, Mapping) or data.get("format") != ASSIGNMENT_FORMAT:
            raise InvalidKeepError(f"not a netdiet assignment (expected 'format': '{ASSIGNMENT_FORMAT}')")
        raw = data.get("values")
        if not isinstance(raw, Mapping):
            raise InvalidKeepError("assignment 'values' must map knob ids to values")
        values: dict[str, Any] = {}
        for kid, value in raw.items():
            kind, _ = split_id(kid)
            if kind in ("keep", "rank") and isinstance(value, list):
                values[kid] = torch.tensor(value, dtype=torch.long)
            elif isinstance(value, int) and not isinstance(value, bool):
                values[kid] = value
            else:
                raise InvalidKeepError(f"knob {kid}: {value!r} is neither an index list nor an integer")
        out = cls(values)
        return out.validate(space) if space is not None else out
