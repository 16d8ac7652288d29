"""One run per output folder: a lock file held for the run's life.

Two ``finetune`` runs writing into one ``output_dir`` would interleave their metrics and
overwrite each other's checkpoints and model. The first run creates ``OUTPUT_DIR/.gfnet-run.lock``
atomically (``O_CREAT | O_EXCL``: of two processes only one can succeed) holding its pid, host
and start time; a second run finds it and stops with exit 2, naming that pid and host.

A lock left by a run that was killed (``SIGKILL``, a power cut) would block the folder for
ever, so a lock whose pid is no longer alive **on this host** is stale: it is taken over with a
warning. A lock from another host cannot be checked from here; its message says to delete the
file once that run is known to be gone. Under ``torchrun`` only rank 0 takes the lock (the
other ranks are part of the same run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gfnet_cli.engine import distributed
from gfnet_cli.errors import UsageError

logger = logging.getLogger(__name__)

LOCK_NAME = ".gfnet-run.lock"


class OutputDirLockedError(UsageError):
    """Another run is using the output folder."""


@dataclass
class RunLock:
    """The lock of one output folder; :meth:`acquire` then :meth:`release` (or ``with``)."""

    output_dir: Path
    held: bool = False
    created_dir: bool = False  # acquire created output_dir: release removes it if left empty

    @property
    def path(self) -> Path:
        return Path(self.output_dir) / LOCK_NAME

    def acquire(self) -> RunLock:
        """Take the lock (creating the folder), or raise :class:`OutputDirLockedError`."""
        folder = Path(self.output_dir)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"output_dir {folder} is a file", param="output_dir")
        self.created_dir = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                return self
            holder = _read(self.path)
            if holder and not _is_stale(holder):
                raise OutputDirLockedError(_locked_message(self.path, holder), param="output_dir")
            if holder != {}:  # {}: the holder just finished; None: an unreadable lock file
                logger.warning(
                    "output_dir %s: taking over the lock of a run that is no longer running (%s)",
                    self.output_dir,
                    _describe(holder) if holder else "unreadable lock file",
                )
                _remove_if_unchanged(self.path, holder)
        holder = _read(self.path) or {}
        raise OutputDirLockedError(_locked_message(self.path, holder), param="output_dir")

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if self.held and (_read(self.path) or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
            if self.created_dir:  # a run refused before writing anything leaves no folder
                with contextlib.suppress(OSError):
                    Path(self.output_dir).rmdir()
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.held = True
        return True

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked_output_dir(output_dir: Path, dist: distributed.DistInfo) -> Iterator[None]:
    """Hold ``output_dir``'s lock for the block (rank 0 takes it; every rank sees a refusal)."""
    lock = RunLock(Path(output_dir))
    refusal = None
    if dist.is_main:
        try:
            lock.acquire()
        except OutputDirLockedError as exc:
            refusal = str(exc)
    refusal = distributed.all_gather_objects(refusal)[0]
    if refusal is not None:
        raise OutputDirLockedError(refusal, param="output_dir")
    try:
        yield
    finally:
        lock.release()


def _read(path: Path) -> dict | None:
    """The holder recorded in the lock file; None when it is unreadable or half-written."""
    for _ in range(3):  # the holder writes its record just after creating the file
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
            return holder
        time.sleep(0.05)
    return None


def _remove_if_unchanged(path: Path, holder: dict | None) -> None:
    """Delete a stale lock, unless another process replaced it since it was read."""
    if _read(path) == holder:
        path.unlink(missing_ok=True)


def _is_stale(holder: dict) -> bool:
    """A holder on this host whose process no longer exists."""
    if holder.get("host") != socket.gethostname():
        return False  # another machine's process: it cannot be checked from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}"


def _locked_message(path: Path, holder: dict) -> str:
    message = f"output_dir {path.parent} is in use by another run ({_describe(holder)})"
    if holder.get("host") != socket.gethostname():
        return message + f"; if that run is gone, delete {path}"
    return message + ": wait for it to end, or choose another output_dir"
