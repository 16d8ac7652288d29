"""Output files of the analyses (checked with serialization.check_output_file), written atomically.

Every file an analysis writes goes to a temporary name beside its target and is renamed into
place, so an interrupted run never leaves half a PNG or half a safetensors file, and an
existing file is replaced only when the caller asked for it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from gfnet_cli.errors import MissingDependencyError
from gfnet_cli.hub.serialization import publish_file


def require_matplotlib(feature: str) -> None:
    """Refuse early (before any work) when the ``plot`` extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError(feature, "plot") from None


def save_figure(figure: Any, path: Path, dpi: int = 150) -> Path:
    """Write a matplotlib figure as PNG atomically, then close it."""
    import matplotlib.pyplot as plt

    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as handle:
        tmp = Path(handle.name)
    try:
        figure.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
        publish_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(figure)
    return path
