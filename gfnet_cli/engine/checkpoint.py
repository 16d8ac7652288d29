"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint holds the model, optimizer, schedule and loss-scaler states, the RNG states of
torch/numpy/python (per process), the position in the data order (epoch, step) and what the
run is (model config, dataset), so ``--resume`` can refuse a folder from another run.

Written with ``torch.save`` to a temporary file that is flushed, synced and renamed: a
checkpoint either exists completely or not at all, so a crash or a full disk during a save
leaves the previous one intact. Read with ``weights_only=True``: only tensors and plain types
are stored, so loading never executes code.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gfnet_cli.errors import CheckpointError, first_line
from gfnet_cli.hub.serialization import to_host as to_host  # one host transfer for a state

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{9})\.pt$")


def checkpoint_name(step: int) -> str:
    """``step-NNNNNNNNN.pt``: zero-padded so names sort in step order."""
    return f"step-{step:09d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (temporary files are ignored)."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], directory: Path, step: int, keep: int = 2) -> Path:
    """Write ``state`` as ``step-NNNNNNNNN.pt`` atomically, then keep only the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(step)
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            writer = _RecordingWriter(handle)
            try:
                torch.save(state, writer)
            except RuntimeError:
                if writer.error is not None:  # torch words ENOSPC as "unexpected pos"
                    raise writer.error from None
                raise
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


class _RecordingWriter:
    """A file's ``write``/``flush`` for ``torch.save``, keeping the OSError a write raised
    (torch replaces it with an error about the zip container's position)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as exc:
            self.error = exc
            raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, loaded weights-only (no pickled code runs) onto the CPU."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable files
        first = first_line(exc).split(". ")[0]  # torch appends paragraphs of advice
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(state, dict) or "model" not in state or "global_step" not in state:
        raise CheckpointError(f"{path}: not a gfnet training checkpoint")
    return state


def latest_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads (an unreadable newest one falls back to the previous).

    ``None`` when there is no checkpoint; :class:`CheckpointError` when there are some but
    none can be read, since silently starting afresh would throw the run away.
    """
    paths = list_checkpoints(directory)
    errors: list[CheckpointError] = []
    for path in reversed(paths):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            logger.warning("skipping %s", exc)
            errors.append(exc)
    if errors:
        raise CheckpointError(
            f"resume: none of the {len(paths)} checkpoint(s) in {directory} can be read "
            f"(newest: {errors[0]}); to start over, use overwrite instead (it deletes them)",
            param=("resume", "overwrite"),
        )
    return None


def clean_temporary_files(directory: Path) -> None:
    """Remove half-written checkpoints left by a process that was killed during a save."""
    if directory.is_dir():
        for path in directory.glob(".step-*.tmp"):
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- RNG states
def capture_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states as tensors and plain types (loadable with weights_only).

    The CUDA generator saved is ``device``'s when it is a GPU (the one the run draws from),
    else the current device's.
    """
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(_cuda_generator_device(device))
    return state


def _cuda_generator_device(device: torch.device | None) -> torch.device | str:
    return device if device is not None and device.type == "cuda" else "cuda"


def restore_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Set this process's RNGs to what :func:`capture_rng_state` recorded (the CUDA one
    into ``device``'s generator when it is a GPU)."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = state["python"]
    internal = tuple(int(v) for v in py_state["internal"].tolist())
    random.setstate((py_state["version"], internal, py_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"], _cuda_generator_device(device))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
