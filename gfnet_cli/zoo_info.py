"""Deprecated: the ``gfnet models`` table moved to :mod:`gfnet_cli.profiling`.

This module re-exports :func:`~gfnet_cli.profiling.model_table` and
:class:`~gfnet_cli.profiling.ZooRow` for one release; import them from
``gfnet_cli.profiling`` (or ``model_table`` from ``gfnet_cli``).
"""

from __future__ import annotations

import warnings

from gfnet_cli.profiling import ZooRow, model_table

warnings.warn(
    "gfnet_cli.zoo_info is deprecated: import model_table and ZooRow from gfnet_cli.profiling",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ZooRow", "model_table"]
