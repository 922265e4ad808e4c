"""Errors a user can act on: each names what was wrong and what to do about it."""


class NetdietError(Exception):
    """Base class for every error netdiet raises on purpose."""


class UnsupportedModelError(NetdietError):
    """The engine met an op or module it cannot reason about on a prunable dimension.

    Raised instead of guessing: a silently wrong group would corrupt the exported model.
    """

    def __init__(self, message: str, *, op: str | None = None, module_path: str | None = None) -> None:
        super().__init__(message)
        self.op = op
        self.module_path = module_path


class InvalidKeepError(NetdietError, ValueError):
    """A keep-setting breaks a group's constraints (unknown group, zero units, excluded group, ...)."""


class TraceError(NetdietError):
    """torch.export could not capture the model with the given example inputs."""


class VerificationError(NetdietError):
    """The exported model's outputs differ from the masked reference beyond tolerance."""


class RecipeError(NetdietError, ValueError):
    """A saved recipe or weight file is missing, corrupt or does not match the base model."""


class ConfigError(NetdietError, ValueError):
    """An argument or option is invalid (unknown module path in `exclude`, bad ratio, ...)."""


class LatencyTableError(NetdietError, ValueError):
    """A latency table is unreadable, corrupt, or was measured on another device, runtime or batch."""


class NonFiniteError(NetdietError, FloatingPointError):
    """Training produced a NaN or infinite loss, gradient, weight or gate: the run is stopped at once.

    `step` is the 1-based optimizer step at which it was seen (None outside a training loop), `what` names
    the quantity and `value` is what it was.
    """

    def __init__(self, message: str, *, step: int | None = None, what: str = "", value: float = float("nan")):
        super().__init__(message)
        self.step = step
        self.what = what
        self.value = value
