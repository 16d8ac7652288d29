"""Locks between processes, and the partial files a killed writer leaves behind.

Every lock is a ``filelock.FileLock`` (``flock``): the kernel releases it when its process
dies, however it dies, so a lock never outlives its holder. The lock file holds who took it
(pid, host, start time), for the message another process gets. It is deleted while still
held when the holder finishes (a waiter that opened it then sees it gone and retries), so a
finished run leaves no lock file; one killed with ``SIGKILL`` leaves an unlocked file that
the next holder takes and removes.

Writers of one destination (a MODEL folder, an exported file, a results file) take its lock
``.NAME.lock`` beside it. Holding it, any partial file of our naming for that destination
(``.NAME.*.partial*``, ``.NAME.*.tmp``, ``.NAME.tmp``) is stale, left by a writer that was
killed, and is removed before the new write starts (docs/trust.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from gfnet_cli.errors import UsageError

logger = logging.getLogger(__name__)


class LockedError(UsageError):
    """Another process holds the lock (its pid and host are in the message)."""


def holder_record() -> dict[str, Any]:
    """Who holds a lock: this process."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def read_holder(path: Path) -> dict[str, Any] | None:
    """The holder recorded in a lock file; ``{}`` when there is none (no file, or empty);
    ``None`` when it cannot be read."""
    for _ in range(3):  # the holder writes its record just after taking the lock
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError:
            return None
        if text.strip():
            try:
                holder = json.loads(text)
            except ValueError:
                holder = None
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        time.sleep(0.05)
    return {} if not text.strip() else None


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')}"


def _write_holder(path: Path) -> None:
    """Record this process in the lock file; the record only words messages, so a full
    disk that refuses it does not stop the lock from working."""
    try:
        with open(path, "r+", encoding="utf-8") as handle:
            handle.truncate(0)
            handle.write(json.dumps(holder_record()) + "\n")
            handle.flush()
    except OSError as exc:
        logger.debug("could not record the holder of %s: %s", path, exc)


@contextlib.contextmanager
def process_lock(path: str | Path, *, timeout: float = -1) -> Iterator[dict[str, Any]]:
    """Hold the lock ``path`` for the block; yields the record a killed holder left (``{}``
    when the last holder finished cleanly).

    ``timeout``: seconds to wait (negative: for ever); when it runs out,
    :class:`filelock.Timeout` is raised for the caller to word.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=timeout)
    lock.acquire()
    try:
        previous = read_holder(path) or {}
        _write_holder(path)
        yield previous
    finally:
        # Deleted while held: a process waiting on this file finds it unlinked and retries.
        path.unlink(missing_ok=True)
        lock.release()


# ---------------------------------------------------------------------------- destinations
def destination_lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def is_partial_of(name: str, target_name: str) -> bool:
    """Whether ``name`` is one of our partial files for ``target_name``."""
    prefix = f".{target_name}."
    if not name.startswith(prefix) or name == f"{prefix}lock":
        return False
    rest = name[len(prefix) :]
    return rest == "tmp" or rest.endswith((".tmp", ".partial")) or ".partial." in rest


def remove_stale_partials(target: Path) -> list[Path]:
    """Delete partial files of our naming for ``target`` (call only while holding its lock:
    then no live writer owns them). Returns what was removed."""
    removed = []
    with contextlib.suppress(OSError):
        for path in target.parent.iterdir():
            if is_partial_of(path.name, target.name):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        logger.info("removed %d partial file(s) of %s left by an interrupted run",
                    len(removed), target)  # fmt: skip
    return removed


@contextlib.contextmanager
def writing(target: str | Path, param: str = "output") -> Iterator[Path]:
    """Hold ``target``'s destination lock while it is written, stale partials removed first.

    A second writer of the same destination is refused at once (:class:`LockedError`, exit
    2, naming ``param``) rather than racing the first one to the rename.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = destination_lock_path(target)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(process_lock(lock_path, timeout=0))
        except Timeout:
            holder = read_holder(lock_path)
            raise LockedError(
                f"{param} {target} is being written by another process "
                f"({describe_holder(holder)}): wait for it to finish, or choose another "
                "destination",
                param=param,
            ) from None
        remove_stale_partials(target)
        yield target
