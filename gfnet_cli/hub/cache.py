"""Where downloads come from and go: cache folders, the Hub endpoint, offline mode, raw URLs.

Shared by ``gfnet_cli.hub.resolve`` (Hub repositories, zoo names), ``gfnet_cli.hub.convert`` (an
authors' checkpoint link) and ``gfnet_cli.hub.push``. The environment (``HF_HOME``,
``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``GFNET_CACHE``) is read at call time,
since huggingface_hub reads it once at its import and tests or long-lived processes change it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gfnet_cli.errors import first_line
from gfnet_cli.hub.errors import (
    DownloadError,
    HubAccessError,
    NetworkError,
    OfflineCacheMissError,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "ON", "YES", "TRUE"}


def hf_home() -> Path:
    default = os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.environ.get("HF_HOME") or default).expanduser()


def cache_dir() -> Path:
    """Where gfnet keeps its own cache (converted zoo models, raw downloads)."""
    base = os.environ.get("GFNET_CACHE") or hf_home() / "gfnet"
    return Path(base).expanduser()


def zoo_cache_dir() -> Path:
    """Where zoo models converted from the authors' checkpoints are kept."""
    return cache_dir() / "zoo"


def hub_cache_dir() -> Path:
    """The standard Hub cache, as huggingface_hub computes it, but read now."""
    return Path(os.environ.get("HF_HUB_CACHE") or hf_home() / "hub").expanduser()


def hub_endpoint() -> str:
    """``HF_ENDPOINT``, or the public Hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """``HF_HUB_OFFLINE=1``, read now (huggingface_hub's own flag counts too, once imported)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE:
        return True
    constants = _loaded_hub_constants()
    return bool(constants is not None and constants.HF_HUB_OFFLINE)


def _loaded_hub_constants() -> Any:
    """huggingface_hub's constants if it is already imported (never imported just for this)."""
    return sys.modules.get("huggingface_hub.constants")


# ---------------------------------------------------------------------------- raw URLs
def download_path(url: str) -> Path:
    """Where :func:`download_url` keeps ``url``."""
    return cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:32]


def download_url(url: str) -> Path:
    """Download ``url`` once into the cache and return the local file.

    The body goes to a uniquely named ``.part`` file that is renamed into place only when
    complete (its length checked against Content-Length), so an interrupted or truncated
    download never leaves a file a later run would take as valid.
    """
    target = download_path(url)
    if target.is_file():
        return target
    if is_offline():
        raise OfflineCacheMissError(
            f"{url} is not in the cache and HF_HUB_OFFLINE is set: run once online"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "gfnet-cli"})
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
    ) as handle:
        tmp = Path(handle.name)
        try:
            received, expected = _copy_response(request, handle)
        except BaseException:
            handle.close()
            tmp.unlink(missing_ok=True)
            raise
    if expected is not None and received != expected:
        tmp.unlink(missing_ok=True)
        raise DownloadError(
            f"the download of {url} was cut short ({received} of {expected} bytes); nothing was "
            "kept: run the command again"
        )
    os.replace(tmp, target)
    return target


def _copy_response(request: urllib.request.Request, handle: Any) -> tuple[int, int | None]:
    url = request.full_url
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = 0
            while chunk := response.read(1 << 20):
                handle.write(chunk)
                received += len(chunk)
            return received, expected
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise HubAccessError(f"{url}: access denied ({exc.code})") from None
        if exc.code == 404:
            raise DownloadError(f"{url}: not found (404); the link may have moved") from None
        raise DownloadError(f"{url}: the server answered {exc.code}; try again later") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NetworkError(
            f"cannot download {url} ({reason}): check your connection or proxy"
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # e.g. cut off mid-body
        raise DownloadError(
            f"the download of {url} failed ({first_line(exc, 200)}); nothing was kept: run again"
        ) from None
