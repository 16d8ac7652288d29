"""What can go wrong talking to the Hub, as one-line errors a user can act on.

One translator, :func:`hub_error`, serves downloads (``gfnet_cli.hub.resolve``) and uploads
(``gfnet_cli.hub.push``): huggingface_hub's exceptions, HTTP statuses and transport failures
become the errors below, all exit code 2 (docs/cli.md). It only reads exception types and
attributes; huggingface_hub is imported when an error is actually translated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gfnet_cli.errors import ModelNotFoundError, UsageError, first_line, is_transport_error

LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"


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


@dataclass(frozen=True)
class HubRequest:
    """What was being done when the Hub failed, for the message."""

    repo_id: str
    endpoint: str
    action: Literal["download", "push"] = "download"
    filename: str | None = None  # the file being downloaded
    label: str | None = None  # ``repo_id@revision`` as the user wrote it
    offline: bool = False

    @property
    def what(self) -> str:
        return self.label or self.repo_id


def hub_error(exc: BaseException, request: HubRequest) -> BaseException:
    """The one-line error for a failed Hub call; anything unrecognized is returned as is.

    An unrecognized wrapper (an upload worker's ``RuntimeError``) is judged by its cause.
    """
    translated = _translate(exc, request)
    if translated is exc and exc.__cause__ is not None:
        cause = _translate(exc.__cause__, request)
        if cause is not exc.__cause__:
            return cause
    return translated


def _translate(exc: BaseException, request: HubRequest) -> BaseException:
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    translated = _named_error(exc, request)
    if translated is not None:
        return translated
    if isinstance(exc, LocalEntryNotFoundError):
        if request.offline:
            return OfflineCacheMissError(
                f"{request.what} is not in the local cache and HF_HUB_OFFLINE is set: run "
                f"`gfnet download {request.what}` once online, or unset HF_HUB_OFFLINE"
            )
        if not isinstance(exc.__cause__, HfHubHTTPError):
            return _unreachable(request)
        exc = exc.__cause__
    response = getattr(exc, "response", None)
    if isinstance(exc, HfHubHTTPError) and response is not None:
        return _status_error(response.status_code, request)
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return DownloadError(
            f"the download of {request.filename} from {request.what} was cut short; nothing "
            "was kept: run the command again"
        )
    if is_transport_error(exc):
        if request.action == "push":
            return _unreachable(request)
        return NetworkError(
            f"the download of {request.filename} from {request.what} failed ({first_line(exc)}): "
            "check your connection and run the command again"
        )
    return exc


def _named_error(exc: BaseException, request: HubRequest) -> UsageError | None:
    """Errors the Hub names (``X-Error-Code``) and ids the client refuses."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = request.repo_id
    if isinstance(exc, GatedRepoError):
        return HubAccessError(
            f"{repo_id} is gated: accept its conditions at {request.endpoint}/{repo_id}, "
            f"then {LOGIN_HINT}"
        )
    if isinstance(exc, RepositoryNotFoundError):
        if request.action == "push":
            return HubRepoNotFoundError(
                f"{repo_id} or its namespace does not exist on the Hub ({request.endpoint}), or "
                f"the token may not see it: check the name, or {LOGIN_HINT}"
            )
        return HubRepoNotFoundError(
            f"{repo_id}: no such repository on the Hub ({request.endpoint}); check the name, or "
            f"if it is private, {LOGIN_HINT}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubRevisionNotFoundError(
            f"{request.what}: the repository has no such revision; give an existing branch, "
            "tag or commit"
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        return HubFileMissingError(
            f"{request.what} has no {request.filename}: it is not a gfnet MODEL repository (it "
            "needs config.json and model.safetensors; `gfnet convert` and `gfnet push` make one)"
        )
    if isinstance(exc, HFValidationError):
        return ModelNotFoundError(f"{repo_id!r} is not a valid Hub repository id (org/name)")
    return None


def _status_error(status: int, request: HubRequest) -> UsageError:
    repo_id = request.repo_id
    if status == 401:
        return HubAccessError(
            f"the Hub refused the credentials for {repo_id} (401): check HF_TOKEN, or log in "
            "again with `hf auth login`"
        )
    if status == 403:
        if request.action == "push":
            return HubAccessError(
                f"the token may not write to {repo_id} (403): use a token with write access to "
                "that namespace"
            )
        return HubAccessError(
            f"access to {repo_id} is forbidden (403): use a token with read access to it "
            f"({LOGIN_HINT})"
        )
    if status == 404 and request.action == "push":
        return HubRepoNotFoundError(f"{repo_id} or its namespace does not exist on the Hub (404)")
    if request.action == "push":
        return NetworkError(f"the Hub refused the push to {repo_id} ({status}): try again later")
    return NetworkError(
        f"the Hub answered {status} for {request.what}/{request.filename}: try again later"
    )


def unreachable_error(exc: BaseException, request: HubRequest) -> NetworkError | None:
    """The one-line "cannot reach the Hub" error when ``exc`` is a transport failure (no
    answer at all: refused, DNS, timeout), else None."""
    return _unreachable(request) if is_transport_error(exc) else None


def _unreachable(request: HubRequest) -> NetworkError:
    if request.action == "push":
        return NetworkError(
            f"cannot reach the Hub at {request.endpoint} to push {request.repo_id}: check your "
            "connection, proxy or HF_ENDPOINT"
        )
    return NetworkError(
        f"cannot reach the Hub at {request.endpoint} to download {request.what}, and it is not "
        "cached: check your connection, proxy or HF_ENDPOINT"
    )
