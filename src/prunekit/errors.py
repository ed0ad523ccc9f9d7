"""Exceptions prunekit raises for bad input. Each message names the offending argument, layer or file."""

from __future__ import annotations


class PrunekitError(Exception):
    """Base class: every error caused by user input derives from it (the CLI prints it without a traceback)."""


class UnknownModelError(PrunekitError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DataError(PrunekitError):
    """A dataset is missing, has the wrong layout, or was asked for with invalid options."""


class CheckpointError(PrunekitError):
    """A checkpoint file is missing, corrupt, or incompatible with the model."""


class ConfigError(PrunekitError, ValueError):
    """An invalid hyper-parameter or option."""


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise ConfigError unless ``low <= value <= high`` (``<`` where the bound is open)."""
    ok = True
    if low is not None:
        ok &= value > low if low_open else value >= low
    if high is not None:
        ok &= value < high if high_open else value <= high
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ConfigError(f"{name}={value!r} is out of range: expected a value in "
                          f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}")
