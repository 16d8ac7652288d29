"""Errors a user can act on.

Every error that reaches the command line is one of these: the CLI prints its message on a
single line and exits with its ``exit_code`` (SPEC.md: 2 for unusable input, 1 otherwise).
"""

from __future__ import annotations


class GFNetError(Exception):
    """Something failed; the message says what and, where possible, what to do next."""

    exit_code = 1


class UsageError(GFNetError):
    """The input cannot be used: a missing file, an unknown model, a bad checkpoint..."""

    exit_code = 2


class ModelNotFoundError(UsageError):
    """A MODEL argument names nothing we can load."""


class CheckpointError(UsageError):
    """A checkpoint file is unreadable, unsafe, or does not describe a GFNet."""


class ConfigError(UsageError):
    """A ``config.json`` is missing, invalid, or disagrees with the weights."""
