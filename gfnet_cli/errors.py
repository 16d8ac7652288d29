"""Errors a user can act on.

Every error that reaches the command line is one of these: the CLI prints its message on a
single line and exits with its ``exit_code`` (docs/cli.md: 2 for unusable input, 1 otherwise).

Library code speaks in parameters, not flags: an error about one argument names the Python
parameter (``batch_size must be at least 1``) and records it in ``param``; the CLI rewrites
that name to the flag the user typed (``--batch-size``). A message that also names other
parameters (``pass resume to continue``) lists them after the first.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Sequence


class GFNetError(Exception):
    """Something failed; the message says what and, where possible, what to do next."""

    exit_code = 1

    def __init__(self, message: str = "", *, param: str | Sequence[str] | None = None) -> None:
        super().__init__(message)
        #: the parameters the message names, the one it is about first
        self.params: tuple[str, ...] = (param,) if isinstance(param, str) else tuple(param or ())

    @property
    def param(self) -> str | None:
        """The parameter the error is about (``None`` when it is about no single one)."""
        return self.params[0] if self.params else None


class UsageError(GFNetError):
    """The input cannot be used: a missing file, an unknown model, a bad checkpoint..."""

    exit_code = 2


class ModelNotFoundError(UsageError):
    """A MODEL argument names nothing we can load."""


class CheckpointError(UsageError):
    """A checkpoint file is unreadable, unsafe, or does not describe a GFNet."""


class ConfigError(UsageError):
    """A ``config.json`` is missing, invalid, or disagrees with the weights."""


def install_extra(extra: str) -> str:
    """How to add an optional extra: gfnet-cli is installed from its repository (it is not on a
    package index), so the command runs in the clone."""
    return f"pip install '.[{extra}]' in the gfnet-cli clone"


class MissingDependencyError(UsageError):
    """An optional extra is not installed; the message gives the pip command."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: {install_extra(extra)}")
        self.extra = extra


def is_transport_error(exc: BaseException) -> bool:
    """``exc`` means no answer at all (refused, DNS, timeout), not an answer that says no."""
    module = type(exc).__module__ or ""
    return module.startswith(("httpx", "httpcore", "socket", "ssl")) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an error (or text), cut to ``limit`` characters.

    Third-party libraries raise multi-paragraph messages; a one-line error policy needs the
    line that says what went wrong.
    """
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0][:limit]


def check_range(
    param: str,
    value: float | None,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: bool = False,
    below: bool = False,
) -> None:
    """Refuse a number outside its range, or not finite, naming the parameter.

    The range is ``[minimum, maximum]``; ``above`` excludes ``minimum`` and ``below``
    excludes ``maximum``. ``None`` means unset and passes. Every numeric parameter of a
    command is checked with this before any MODEL or data is read.
    """
    if value is None:
        return
    low = "-inf" if minimum is None else f"{minimum:g}"
    high = "inf" if maximum is None else f"{maximum:g}"
    interval = f"{'(' if above else '['}{low}, {high}{')' if below or maximum is None else ']'}"
    inside = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (minimum is None or (value > minimum if above else value >= minimum))
        and (maximum is None or (value < maximum if below else value <= maximum))
    )
    if not inside:
        raise UsageError(f"{param} must be in {interval}, got {value}", param=param)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write that found no space left (or the quota used up)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def write_error(error: OSError, path: object, kept: str = "nothing was left behind") -> GFNetError:
    """One line for a write that failed: a full disk says so, and what is left (``kept``)."""
    if is_disk_full(error):
        return GFNetError(
            f"the disk is full: could not write {path} (no space left on device); {kept}: "
            "free some space and run again"
        )
    return GFNetError(f"could not write {path} ({error.strerror or error}); {kept}")
