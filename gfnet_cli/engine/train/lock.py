"""One run per output folder: ``OUTPUT_DIR/.gfnet-run.lock``, held for the run's life.

Two ``finetune`` runs writing into one ``output_dir`` would interleave their metrics and
overwrite each other's checkpoints and model. The lock is a ``filelock`` lock
(:mod:`gfnet_cli.hub.locks`): a second run stops with exit 2, naming the pid and host of the
first. The kernel releases it when a run dies, however it dies; the record a killed run
(``SIGKILL``, a power cut) leaves in the file is taken over with a warning. A record from
another host is not: a lock on a shared filesystem may not be visible across machines, so
its message says to delete the file once that run is known to be gone. Under ``torchrun``
only rank 0 takes the lock (the other ranks are part of the same run).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

from filelock import Timeout

from gfnet_cli.engine import distributed
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.locks import LockedError, describe_holder, process_lock, read_holder

logger = logging.getLogger(__name__)

LOCK_NAME = ".gfnet-run.lock"


class OutputDirLockedError(LockedError):
    """Another run is using the output folder."""


class RunLock:
    """The lock of one output folder; :meth:`acquire` then :meth:`release` (or ``with``)."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self._held: contextlib.ExitStack | None = None
        self.created_dir = False  # acquire created output_dir: release removes it if left empty

    @property
    def path(self) -> Path:
        return self.output_dir / LOCK_NAME

    def acquire(self) -> RunLock:
        """Take the lock (creating the folder), or raise :class:`OutputDirLockedError`."""
        folder = self.output_dir
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"output_dir {folder} is a file", param="output_dir")
        self.created_dir = not folder.exists()
        remote = read_holder(self.path)
        if remote and remote.get("host") != socket.gethostname():
            raise OutputDirLockedError(_locked_message(self.path, remote), param="output_dir")
        stack = contextlib.ExitStack()
        try:
            previous = stack.enter_context(process_lock(self.path, timeout=0))
        except Timeout:
            holder = read_holder(self.path)
            raise OutputDirLockedError(
                _locked_message(self.path, holder), param="output_dir"
            ) from None
        if previous:
            logger.warning(
                "output_dir %s: taking over the lock of a run that is no longer running (%s)",
                folder,
                describe_holder(previous),
            )
        self._held = stack
        return self

    def release(self) -> None:
        """Release the lock (and remove the lock file) if this object holds it."""
        if self._held is None:
            return
        self._held.close()
        self._held = None
        if self.created_dir:  # a run refused before writing anything leaves no folder
            with contextlib.suppress(OSError):
                self.output_dir.rmdir()

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


def _locked_message(path: Path, holder: dict | None) -> str:
    message = f"output_dir {path.parent} is in use by another run ({describe_holder(holder)})"
    if holder and holder.get("host") != socket.gethostname():
        return message + f"; if that run is gone, delete {path}"
    return message + ": wait for it to end, or choose another output_dir"
