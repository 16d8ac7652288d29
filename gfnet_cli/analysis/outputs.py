"""Output files of the analyses: refused when they exist (unless overwriting), written atomically.

Every file an analysis writes goes to a temporary name beside its target and is renamed into
place, so an interrupted run never leaves half a PNG or half a safetensors file, and an
existing file is replaced only when the caller asked for it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from gfnet_cli.errors import MissingDependencyError, UsageError
from gfnet_cli.serialization import publish_file


def check_output(
    path: str | Path | None, param: str, *, overwrite: bool, suffixes: tuple[str, ...] = ()
) -> Path | None:
    """``path`` as a Path once it can be written: right suffix, folder exists, not taken."""
    if path is None:
        return None
    path = Path(path).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(
            f"{param} must end in {' or '.join(suffixes)}, got {str(path)!r}", param=param
        )
    if path.is_dir():
        raise UsageError(f"{param} {path} is a folder; name a file", param=param)
    if not path.parent.is_dir():
        raise UsageError(f"{param} {path}: folder {path.parent} does not exist", param=param)
    if path.exists() and not overwrite:
        raise UsageError(
            f"{param} {path} already exists: choose another name or pass overwrite",
            param=(param, "overwrite"),
        )
    return path


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
