"""Deprecated alias of :mod:`gfnet_cli.device` (removed in the next release)."""

from __future__ import annotations

import warnings

from gfnet_cli.device import (  # noqa: F401
    DEVICES,
    PRECISIONS,
    autocast_context,
    check_precision,
    inference,
    precision_dtype,
    resolve_device,
)

warnings.warn(
    "gfnet_cli.precision is deprecated: import from gfnet_cli.device",
    DeprecationWarning,
    stacklevel=2,
)
