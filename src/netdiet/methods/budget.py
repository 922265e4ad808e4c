"""Budgets: what the compressed model may cost, relative to the dense model or in absolute units."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from netdiet.errors import ConfigError

METRICS = ("flops", "params", "weight_bytes", "bops", "latency", "latency_ms")
LATENCY_FIELDS = ("latency", "latency_ms")
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


@dataclass(frozen=True)
class Budget:
    """One limit on one metric: a fraction of the dense model's cost, or an absolute amount said so.

    `Budget(flops=0.5)` keeps half the FLOPs; `Budget(flops=40e6, absolute=True)` allows 40 MFLOPs
    (a multiply-add counts 2). A bare value above 1 is refused rather than guessed: `flops=1.5` is as
    likely a typo for 0.15 as a limit of 1.5 FLOPs. Latency is measured, not counted:
    `Budget(latency=0.6)` is 60% of the dense model's latency on the latency table's device and runtime
    (always a fraction), `Budget(latency_ms=2.0)` an absolute limit in milliseconds; both need a latency
    table.
    """

    flops: float | None = None
    params: float | None = None
    weight_bytes: float | None = None
    bops: float | None = None
    latency: float | None = None
    latency_ms: float | None = None
    absolute: bool = False

    def __post_init__(self) -> None:
        given = [(m, getattr(self, m)) for m in METRICS if getattr(self, m) is not None]
        if len(given) != 1:
            raise ConfigError(
                f"a Budget limits exactly one metric ({', '.join(METRICS)}), got {len(given)}: "
                "e.g. Budget(flops=0.5) for half the dense FLOPs"
            )
        metric, value = given[0]
        if not isinstance(value, (int, float)) or value != value or value <= 0:
            raise ConfigError(f"budget {metric}={value!r} must be a positive number")
        if metric == "latency" and value > 1.0:
            raise ConfigError(
                f"budget latency={value} is a fraction of the dense latency and must be <= 1; "
                f"for milliseconds write latency_ms={value}"
            )
        if metric == "latency" and self.absolute:
            raise ConfigError("budget latency= is always a fraction; for milliseconds write latency_ms=")
        if metric != "latency_ms" and not self.absolute and value > 1.0:
            raise ConfigError(
                f"budget {metric}={value:g} is above 1, so it is not a fraction of the dense model's cost; "
                f"for a fraction write e.g. {metric}=0.5, for an absolute limit give a unit or the explicit "
                f"form: {metric}={_human(value)} or {metric}_abs={value:g} "
                f"(Python: Budget({metric}={value:g}, absolute=True))"
            )

    @property
    def name(self) -> str:
        """The field that was given (latency or latency_ms for the two latency forms)."""
        return next(m for m in METRICS if getattr(self, m) is not None)

    @property
    def metric(self) -> str:
        """The cost-report field the budget limits (both latency forms limit latency_ms)."""
        return "latency_ms" if self.name in LATENCY_FIELDS else self.name

    @property
    def needs_latency(self) -> bool:
        return self.name in LATENCY_FIELDS

    @property
    def value(self) -> float:
        return float(getattr(self, self.name))

    @property
    def relative(self) -> bool:
        return self.name != "latency_ms" and not self.absolute

    def target(self, dense_cost: float) -> float:
        """The absolute limit for a model whose dense cost is `dense_cost`."""
        return self.value * dense_cost if self.relative else self.value

    def to_dict(self) -> dict[str, Any]:
        """{'flops': 0.5} for a fraction, {'flops_abs': 4e7} for an absolute limit (what `parse` reads)."""
        if self.absolute and self.name != "latency_ms":
            return {f"{self.name}_abs": self.value}
        return {self.name: self.value}

    def __str__(self) -> str:
        ((key, value),) = self.to_dict().items()
        return f"{key}={value:g}"

    @classmethod
    def parse(cls, text: str) -> Budget:
        """'flops=0.5' (a fraction), 'flops=40M' or 'flops_abs=4e7' (absolute), 'params=0.3',
        'weight_bytes=1.5M', 'latency=0.6', 'latency_ms=2.5'. A bare value above 1 is refused."""
        m = re.fullmatch(r"\s*([a-z_]+)\s*=\s*([0-9.eE+-]+)\s*([kKmMgGtT]?)\s*", text or "")
        if not m:
            raise ConfigError(
                f"cannot read budget '{text}': write METRIC=VALUE, e.g. flops=0.5 (half the dense FLOPs) "
                f"or flops=40M (absolute); metrics: {', '.join(METRICS)}"
            )
        metric, number, suffix = m.group(1), m.group(2), m.group(3).lower()
        absolute = bool(suffix)
        if metric.endswith("_abs") and metric[: -len("_abs")] in METRICS:
            metric, absolute = metric[: -len("_abs")], True
        if metric not in METRICS:
            raise ConfigError(f"unknown budget metric '{metric}'; use one of {', '.join(METRICS)}")
        try:
            value = float(number) * _SUFFIX[suffix]
        except ValueError as exc:
            raise ConfigError(f"budget value '{number}' is not a number") from exc
        if metric == "latency_ms":
            absolute = False  # always milliseconds; the field says so
        return cls(**{metric: value}, absolute=absolute)


def _human(value: float) -> str:
    """40000000.0 -> '40M': the unit-suffixed form `parse` reads."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"
