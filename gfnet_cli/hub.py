"""Finding MODELs: local folders, Hub repositories and zoo names."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from gfnet_cli.errors import ModelNotFoundError, UsageError
from gfnet_cli.models.config import CONFIG_NAME


def cache_dir() -> Path:
    base = os.environ.get("GFNET_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(Path.home(), ".cache", "huggingface")), "gfnet"
    )
    return Path(base)


def download_url(url: str) -> Path:
    """Download ``url`` once into the cache (atomically) and return the local file."""
    target = cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:32]
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as handle:
        tmp = Path(handle.name)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, handle)
        except (OSError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"could not download {url}: {exc}") from None
    os.replace(tmp, target)
    return target


def resolve_model(model: str, revision: str | None = None) -> Path:
    """The local MODEL folder for ``model``."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise ModelNotFoundError(f"{path} is a folder without config.json: not a MODEL folder")
        return path
    raise ModelNotFoundError(f"{model}: no such MODEL folder")
