"""Finding MODELs: local folders, Hub repositories and zoo names.

Hub downloads go through ``huggingface_hub.hf_hub_download`` into the standard Hub cache
(``HF_HUB_CACHE`` / ``HF_HOME``), fetching only ``config.json``, ``model.safetensors`` and
``README.md``. Environment variables (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT``,
``HF_TOKEN``, ``HF_HUB_OFFLINE``) are read at call time, so they apply even when
huggingface_hub was imported earlier.

Zoo names (``gfnet-xs``) map to ``$GFNET_HUB_ORG/<name>`` on the Hub. The authors never put
their weights there, so when that repository does not exist the authors' checkpoint is
downloaded once, converted (weights-only, no pickled code runs) and cached as a MODEL folder
under ``$GFNET_CACHE`` (default ``$HF_HOME/gfnet``); later runs need no network.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import struct
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gfnet_cli.errors import CheckpointError, ConfigError, ModelNotFoundError, UsageError
from gfnet_cli.models.config import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, GFNetConfig
from gfnet_cli.models.zoo import ZOO, ZooEntry, get_zoo_entry, is_zoo_name

logger = logging.getLogger(__name__)

DEFAULT_HUB_ORG = "gfnet"
HUB_ORG_ENV = "GFNET_HUB_ORG"
ZOO_MIRROR_ENV = "GFNET_ZOO_MIRROR"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


# ---------------------------------------------------------------------------- errors
class HubRepoNotFoundError(ModelNotFoundError):
    """The Hub has no such repository (or it is private and no token grants access)."""


class HubRevisionNotFoundError(ModelNotFoundError):
    """The repository exists but not at that branch, tag or commit."""


class HubFileMissingError(ModelNotFoundError):
    """The repository lacks a file every MODEL needs."""


class HubAccessError(UsageError):
    """401/403: gated, private, or a token without the right permission."""


class NetworkError(UsageError):
    """The server cannot be reached and nothing usable is cached."""


class OfflineCacheMissError(UsageError):
    """Offline mode is on and the MODEL is not in the cache."""


class DownloadError(UsageError):
    """A download failed or arrived incomplete; nothing was kept."""


class CorruptModelError(ConfigError):
    """A MODEL folder's weights are truncated or corrupt."""


# ---------------------------------------------------------------------------- settings
def cache_dir() -> Path:
    """Where gfnet keeps its own cache (converted zoo models, raw downloads)."""
    base = os.environ.get("GFNET_CACHE") or os.path.join(_hf_home(), "gfnet")
    return Path(base).expanduser()


def zoo_cache_dir() -> Path:
    """Where zoo models converted from the authors' checkpoints are kept."""
    return cache_dir() / "zoo"


def _hf_home() -> str:
    default = os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.expanduser(os.environ.get("HF_HOME") or default)


def hub_cache_dir() -> Path:
    """The standard Hub cache, as huggingface_hub computes it, but read now."""
    return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(_hf_home(), "hub")).expanduser()


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """``HF_HUB_OFFLINE=1`` (read at call time, as well as at huggingface_hub's import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_org() -> str:
    """The Hub organization holding the zoo models (``GFNET_HUB_ORG`` overrides it)."""
    return os.environ.get(HUB_ORG_ENV, "").strip() or DEFAULT_HUB_ORG


def zoo_repo_id(name: str) -> str:
    return f"{hub_org()}/{get_zoo_entry(name).name}"


def zoo_checkpoint_url(entry: ZooEntry) -> str:
    """The authors' download link, or ``$GFNET_ZOO_MIRROR/<name>.pth`` when a mirror is set."""
    mirror = os.environ.get(ZOO_MIRROR_ENV, "").strip()
    if mirror:
        return f"{mirror.rstrip('/')}/{entry.name}.pth"
    return entry.url


# ---------------------------------------------------------------------------- resolving
def split_revision(model: str) -> tuple[str, str | None]:
    """``org/name@rev`` -> (``org/name``, ``rev``)."""
    if "@" in model:
        name, _, revision = model.partition("@")
        return name, revision or None
    return model, None


def resolve_model(
    model: str,
    revision: str | None = None,
    *,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
) -> Path:
    """The local MODEL folder for ``model``: a folder, ``org/name[@rev]`` or a zoo name.

    Hub repositories and zoo names are downloaded (or converted) on first use and come from
    the cache afterwards, also offline.
    """
    text = str(model).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise ConfigError(f"{path} is a folder without config.json: not a MODEL folder")
        return path
    name, at_revision = split_revision(text)
    if at_revision and revision and at_revision != revision:
        raise UsageError(f"{text} names revision {at_revision!r} but --revision is {revision!r}")
    revision = revision or at_revision
    options: dict[str, Any] = {
        "token": token,
        "force_download": force_download,
        "local_files_only": local_files_only,
        "cache_dir": cache_dir,
    }
    if is_zoo_name(name):
        return _resolve_zoo(get_zoo_entry(name), revision, **options)
    if _REPO_ID.match(name):
        return download_model(name, revision, **options)
    if path.exists():
        raise ModelNotFoundError(
            f"{path} is a file, not a MODEL folder: convert a checkpoint with `gfnet convert`"
        )
    raise ModelNotFoundError(
        f"{text}: no such MODEL folder, and not a Hub repository id (org/name) or a zoo name "
        f"({', '.join(ZOO)})"
    )


def resolve_config(model: str, revision: str | None = None) -> GFNetConfig:
    """A MODEL's architecture without its weights (``profile``, ``finetune --from-scratch``).

    A zoo name needs nothing downloaded; a Hub repository only its ``config.json``.
    """
    text = str(model).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        return GFNetConfig.load(path)
    name, at_revision = split_revision(text)
    if is_zoo_name(name) and not (revision or at_revision):
        return get_zoo_entry(name).config()
    if _REPO_ID.match(name):
        revision = revision or at_revision
        label = f"{name}@{revision}" if revision else name
        config_path = _fetch(
            name,
            CONFIG_NAME,
            revision,
            label=label,
            token=None,
            force_download=False,
            local_files_only=is_offline(),
            cache_dir=None,
        )
        try:
            return GFNetConfig.load(config_path)
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None
    return GFNetConfig.load(resolve_model(text, revision))


def download(model: str, revision: str | None = None, *, force_download: bool = False) -> Path:
    """Resolve ``model`` to a local folder and check that it loads (``gfnet download``)."""
    folder = resolve_model(model, revision, force_download=force_download)
    check_model_folder(folder, label=str(model), hint=_refetch_hint(str(model), revision))
    return folder


def download_model(
    repo_id: str,
    revision: str | None = None,
    *,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
) -> Path:
    """Fetch a MODEL repository's files into the Hub cache; return its snapshot folder.

    The weights and card are fetched at the commit ``config.json`` came from, so the three
    files always belong together.
    """
    offline = local_files_only or is_offline()
    if offline and force_download:
        raise UsageError("cannot force a download while HF_HUB_OFFLINE is set")
    options: dict[str, Any] = {
        "token": token,
        "force_download": force_download,
        "local_files_only": offline,
        "cache_dir": cache_dir,
    }
    label = f"{repo_id}@{revision}" if revision else repo_id
    config_path = _fetch(repo_id, CONFIG_NAME, revision, label=label, **options)
    commit = config_path.parent.name
    _fetch(repo_id, WEIGHTS_NAME, commit, label=label, **options)
    try:
        _fetch(repo_id, CARD_NAME, commit, label=label, **options)
    except (HubFileMissingError, OfflineCacheMissError, NetworkError):
        logger.debug("%s has no model card", label)
    folder = config_path.parent
    check_model_folder(folder, label=label, hint=_refetch_hint(repo_id, revision))
    return folder


def _refetch_hint(model: str, revision: str | None) -> str:
    if Path(model).expanduser().is_dir():
        return "write the MODEL folder again (gfnet convert / finetune)"
    again = f"gfnet download {model}" + (f" --revision {revision}" if revision else "")
    return f"fetch it again with `{again} --force-download`, or fix the file in the repository"


def _fetch(
    repo_id: str,
    filename: str,
    revision: str | None,
    *,
    label: str,
    token: str | bool | None,
    force_download: bool,
    local_files_only: bool,
    cache_dir: str | Path | None,
) -> Path:
    """``hf_hub_download`` one file, with every failure turned into a one-line UsageError."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir or hub_cache_dir(),
                endpoint=hub_endpoint(),
                token=token,
                force_download=force_download,
                local_files_only=local_files_only,
                library_name="gfnet-cli",
            )
        )
    except Exception as exc:  # translated below; anything unknown is re-raised as is
        raise _hub_error(exc, repo_id, filename, label, local_files_only) from None


def _hub_error(exc: Exception, repo_id: str, filename: str, label: str, offline: bool) -> Exception:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    login = "log in with `hf auth login` or set HF_TOKEN"
    if isinstance(exc, GatedRepoError):
        return HubAccessError(
            f"{repo_id} is gated: accept its conditions at {endpoint}/{repo_id}, then {login}"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return HubRepoNotFoundError(
            f"{repo_id}: no such repository on the Hub ({endpoint}); check the name, or if it "
            f"is private, {login}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubRevisionNotFoundError(
            f"{label}: the repository has no such revision; give an existing branch, tag or commit"
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        return HubFileMissingError(
            f"{label} has no {filename}: it is not a gfnet MODEL repository (it needs "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}; `gfnet convert` and `gfnet push` make one)"
        )
    if isinstance(exc, HFValidationError):
        return ModelNotFoundError(f"{repo_id!r} is not a valid Hub repository id (org/name)")
    if isinstance(exc, LocalEntryNotFoundError):
        if offline:
            return OfflineCacheMissError(
                f"{label} is not in the local cache and HF_HUB_OFFLINE is set: run "
                f"`gfnet download {label}` once online, or unset HF_HUB_OFFLINE"
            )
        cause = exc.__cause__
        if isinstance(cause, HfHubHTTPError):
            exc = cause
        else:
            return NetworkError(
                f"cannot reach the Hub at {endpoint} to download {label}, and it is not cached: "
                "check your connection, proxy or HF_ENDPOINT"
            )
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return HubAccessError(
                f"the Hub refused the credentials for {repo_id} (401): check HF_TOKEN or {login}"
            )
        if status == 403:
            return HubAccessError(
                f"access to {repo_id} is forbidden (403): use a token with read access to it "
                f"({login})"
            )
        return NetworkError(f"the Hub answered {status} for {label}/{filename}: try again later")
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return DownloadError(
            f"the download of {filename} from {label} was cut short; nothing was kept: run the "
            "command again"
        )
    module = type(exc).__module__ or ""
    if module.startswith(("httpx", "httpcore", "socket", "ssl")) or isinstance(
        exc, (ConnectionError, TimeoutError)
    ):
        return NetworkError(
            f"the download of {filename} from {label} failed ({_first_line(exc)}): check your "
            "connection and run the command again"
        )
    return exc


# ---------------------------------------------------------------------------- zoo names
def _resolve_zoo(
    entry: ZooEntry,
    revision: str | None,
    *,
    token: str | bool | None,
    force_download: bool,
    local_files_only: bool,
    cache_dir: str | Path | None,
) -> Path:
    """A zoo model: converted before, on the Hub, or converted now from the authors' link."""
    converted = zoo_cache_dir() / entry.name
    if revision is None and not force_download and _looks_complete(converted):
        return converted
    repo_id = zoo_repo_id(entry.name)
    try:
        return download_model(
            repo_id,
            revision,
            token=token,
            force_download=force_download,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
    except HubRepoNotFoundError:
        if revision is not None:
            raise
        logger.info("%s is not on the Hub: using the authors' checkpoint", repo_id)
    except OfflineCacheMissError:
        raise OfflineCacheMissError(
            f"{entry.name} is not cached and HF_HUB_OFFLINE is set: run `gfnet download "
            f"{entry.name}` once online, or unset HF_HUB_OFFLINE"
        ) from None
    except NetworkError as hub_error:
        # Where the Hub is blocked the authors' own link may still answer.
        if revision is not None:
            raise
        logger.warning("%s; trying the authors' link for %s", hub_error, entry.name)
        try:
            return convert_zoo_checkpoint(entry, converted)
        except NetworkError:
            raise NetworkError(
                f"{entry.name}: cannot reach the Hub ({hub_endpoint()}) nor the authors' link "
                f"({zoo_checkpoint_url(entry)}): check your connection or proxy"
            ) from None
    return convert_zoo_checkpoint(entry, converted)


def _looks_complete(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def convert_zoo_checkpoint(entry: ZooEntry, target: Path) -> Path:
    """Download the authors' checkpoint once, convert it into ``target`` (atomically)."""
    from gfnet_cli.convert import convert_checkpoint

    if is_offline():
        raise OfflineCacheMissError(
            f"{entry.name} is not cached and HF_HUB_OFFLINE is set: run `gfnet download "
            f"{entry.name}` once online, or unset HF_HUB_OFFLINE"
        )
    url = zoo_checkpoint_url(entry)
    logger.info("downloading %s from %s and converting it (once)", entry.name, url)
    try:
        convert_checkpoint(entry.name, target, arch=entry.name, overwrite=True)
    except CheckpointError as exc:
        raise CheckpointError(
            f"the authors' checkpoint for {entry.name} ({url}) could not be converted: {exc}"
        ) from None
    except (NetworkError, DownloadError, HubAccessError) as exc:
        raise type(exc)(f"{entry.name} (the authors' checkpoint): {exc}") from None
    finally:
        # The raw pickle is not needed once converted, and a bad one must not be reused.
        download_path(url).unlink(missing_ok=True)
    return target


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
            f"the download of {url} failed ({_first_line(exc)}); nothing was kept: run again"
        ) from None


# ---------------------------------------------------------------------------- validation
def check_model_folder(
    folder: str | Path, label: str | None = None, hint: str | None = None
) -> GFNetConfig:
    """Check a MODEL folder without loading its tensors: config valid, weights intact and
    matching the config. Returns the config. ``hint`` says how to get a good copy."""
    import torch

    from gfnet_cli.serialization import check_state_dict

    folder = Path(folder)
    label = label or str(folder)
    try:
        config = GFNetConfig.load(folder)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}" + (f"; {hint}" if hint else "")) from None
    shapes = safetensors_shapes(folder / WEIGHTS_NAME, label=label, hint=hint)

    # Meta tensors carry the shapes without reading (or allocating) any weights.
    placeholders = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    check_state_dict(_expected_shapes(config), placeholders, label)
    return config


def safetensors_shapes(
    path: Path, label: str | None = None, hint: str | None = None
) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header, after checking the file is complete."""
    label = label or str(path)
    hint = hint or "write the MODEL folder again (gfnet convert / finetune)"
    if not path.is_file():
        raise ConfigError(f"{label}: {WEIGHTS_NAME} not found: a MODEL folder needs one")
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ValueError("shorter than a header")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise ValueError("header longer than the file")
            header = json.loads(handle.read(header_len))
        end = 0
        shapes = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            begin, stop = info["data_offsets"]
            end = max(end, int(stop))
            shapes[key] = tuple(int(d) for d in info["shape"])
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
        raise CorruptModelError(
            f"{label}: {WEIGHTS_NAME} is corrupt ({_first_line(exc)}): {hint}"
        ) from None
    if 8 + header_len + end != size:
        raise CorruptModelError(
            f"{label}: {WEIGHTS_NAME} is truncated or corrupt ({size} bytes, its header "
            f"describes {8 + header_len + end}): {hint}"
        )
    return shapes


def _expected_shapes(config: GFNetConfig) -> dict[str, tuple[int, ...]]:
    import torch

    from gfnet_cli.models.gfnet import GFNet

    with torch.device("meta"):
        skeleton = GFNet(config)
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


__all__ = [
    "DEFAULT_HUB_ORG",
    "cache_dir",
    "check_model_folder",
    "download",
    "download_model",
    "download_url",
    "hub_org",
    "resolve_config",
    "resolve_model",
    "zoo_checkpoint_url",
    "zoo_repo_id",
]
from gfnet_cli.models.factory import load_model  # noqa: E402,F401
