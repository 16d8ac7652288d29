"""Where a zoo name's weights come from, and the record that pins the authors' file.

A zoo name (``gfnet-xs``) is a promise: the authors' published weights. Only sources the
project controls may keep it (docs/trust.md):

- by default the authors' checkpoint, from their published link or ``$GFNET_ZOO_MIRROR``,
  converted once without running pickled code and cached;
- a Hub repository only when the user names the organization (``GFNET_HUB_ORG``), or at a
  commit this package ships for a repository the project has published
  (``ZooEntry.hub_revision``): a commit hash names content, so whoever holds the namespace
  cannot change what it resolves to.

Trust on first use: the sha256 of the authors' file is recorded beside the converted folder
the first time it is converted; a later download that differs is refused until the user
clears that cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from filelock import Timeout

from gfnet_cli.errors import CheckpointError, GFNetError, UsageError
from gfnet_cli.hub.cache import zoo_cache_dir
from gfnet_cli.hub.locks import describe_holder, process_lock, read_holder
from gfnet_cli.models.zoo import ZooEntry, get_zoo_entry

ZOO_MIRROR_ENV = "GFNET_ZOO_MIRROR"
HUB_ORG_ENV = "GFNET_HUB_ORG"
#: the organization the project publishes under; used only at commits this package ships
PROJECT_HUB_ORG = "gfnet"
RECORD_SUFFIX = ".source.json"
#: how long a first use waits for another process fetching the same zoo name
FIRST_USE_WAIT_S = 3600.0

logger = logging.getLogger(__name__)

SourceKind = Literal["authors", "mirror", "hub"]


class ChecksumMismatchError(CheckpointError):
    """The authors' file differs from the one first converted under this zoo name."""


@dataclass(frozen=True)
class ZooSource:
    """Where a zoo name resolves now: the authors' link, a mirror of it, or a Hub repository."""

    name: str
    kind: SourceKind
    location: str  # the checkpoint URL, or the Hub repository id
    revision: str | None = None  # Hub only: the commit or revision asked for
    sha256: str | None = None  # the authors' file as first converted (None: not yet)
    cached: str | None = None  # the converted folder, once there

    def describe(self) -> str:
        """One line for people: what is trusted, and how it is checked."""
        if self.kind == "hub":
            at = f"@{self.revision}" if self.revision else ""
            return f"{self.name}: Hub repository {self.location}{at}"
        origin = "the authors' checkpoint" if self.kind == "authors" else "a mirror of it"
        pinned = f", sha256 {self.sha256}" if self.sha256 else ", not yet downloaded"
        return f"{self.name}: {origin} {self.location}{pinned}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hub_org_override() -> str | None:
    """The Hub organization the user named for zoo names (``GFNET_HUB_ORG``), if any."""
    return os.environ.get(HUB_ORG_ENV, "").strip() or None


def zoo_checkpoint_url(entry: ZooEntry) -> str:
    """The authors' download link, or ``$GFNET_ZOO_MIRROR/<name>.pth`` when a mirror is set."""
    mirror = os.environ.get(ZOO_MIRROR_ENV, "").strip()
    if mirror:
        return f"{mirror.rstrip('/')}/{entry.name}.pth"
    return entry.url


def zoo_source(name: str, revision: str | None = None) -> ZooSource:
    """Where ``name`` (a zoo name) resolves now, under the environment as it is.

    A ``revision`` needs a Hub organization the user named: a revision of a repository
    nobody named could be anything.
    """
    entry = get_zoo_entry(name)
    org = hub_org_override()
    if org is not None:
        return ZooSource(entry.name, "hub", f"{org}/{entry.name}", revision)
    if revision is not None:
        raise UsageError(
            f"{entry.name}@{revision}: a zoo name takes a revision only from a Hub organization "
            f"you name: set {HUB_ORG_ENV}, or name the repository (ORG/{entry.name}@{revision})",
            param="revision",
        )
    if entry.hub_revision is not None:
        return ZooSource(entry.name, "hub", f"{PROJECT_HUB_ORG}/{entry.name}", entry.hub_revision)
    folder = converted_folder(entry.name)
    record = read_record(entry.name)
    return ZooSource(
        name=entry.name,
        kind="mirror" if os.environ.get(ZOO_MIRROR_ENV, "").strip() else "authors",
        location=zoo_checkpoint_url(entry),
        sha256=record.get("sha256") if record else None,
        cached=str(folder) if (folder / "config.json").is_file() else None,
    )


# ---------------------------------------------------------------------------- first use
def first_use_lock_path(name: str) -> Path:
    return zoo_cache_dir() / f".{name}.first-use.lock"


@contextlib.contextmanager
def first_use_lock(name: str, timeout_s: float = FIRST_USE_WAIT_S) -> Iterator[None]:
    """Hold ``name``'s lock around download -> hash -> record check -> convert -> record.

    Two processes using a zoo name for the first time at once would otherwise delete each
    other's download, or convert one file while the record pins another. The second one
    waits here, then finds the folder the first converted and reuses it.
    """
    path = first_use_lock_path(name)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(process_lock(path, timeout=0))
        except Timeout:
            holder = describe_holder(read_holder(path))
            logger.warning("%s: waiting for %s, which is fetching it", name, holder)
            try:
                stack.enter_context(process_lock(path, timeout=timeout_s))
            except Timeout:
                raise GFNetError(
                    f"{name}: gave up after {timeout_s:.0f} s waiting for {holder} to fetch it; "
                    "run again once it is done"
                ) from None
        yield


# ---------------------------------------------------------------------------- the record
def converted_folder(name: str) -> Path:
    """The cached MODEL folder converted from the authors' checkpoint for ``name``."""
    return zoo_cache_dir() / name


def record_path(name: str) -> Path:
    """The trust-on-first-use record of ``name``, beside its converted folder."""
    return zoo_cache_dir() / f"{name}{RECORD_SUFFIX}"


def read_record(name: str) -> dict[str, Any] | None:
    """The record of the authors' file first converted for ``name`` (None: none yet)."""
    path = record_path(name)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is unreadable ({exc}): delete it and the {name} folder beside it to "
            "convert the authors' checkpoint again"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise CheckpointError(
            f"{path} is not a gfnet source record: delete it and the {name} folder beside it "
            "to convert the authors' checkpoint again"
        )
    return record


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_against_record(name: str, sha256: str, url: str) -> None:
    """Refuse an authors' file that differs from the one first converted for ``name``."""
    record = read_record(name)
    if record is None or record["sha256"] == sha256:
        return
    first = record.get("url", "the first source")
    raise ChecksumMismatchError(
        f"{name}: the checkpoint from {url} has sha256 {sha256}, but the one first converted "
        f"(from {first}) had {record['sha256']}; refusing it. If the change is expected, clear "
        f"the cache entry (delete {record_path(name)} and {converted_folder(name)}) and run again"
    )


def record_first_use(name: str, sha256: str, url: str, size: int) -> None:
    """Pin ``name`` to this file, unless a record exists (then it matched already)."""
    path = record_path(name)
    if path.is_file():
        return
    record = {
        "name": name,
        "url": url,
        "sha256": sha256,
        "size": size,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
    ) as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, path)


__all__ = [
    "HUB_ORG_ENV",
    "PROJECT_HUB_ORG",
    "ZOO_MIRROR_ENV",
    "ChecksumMismatchError",
    "ZooSource",
    "check_against_record",
    "converted_folder",
    "file_sha256",
    "first_use_lock",
    "hub_org_override",
    "read_record",
    "record_first_use",
    "record_path",
    "zoo_checkpoint_url",
    "zoo_source",
]
