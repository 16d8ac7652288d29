"""Devices and numeric precision: one rule for every command.

``resolve_device("auto")`` picks this process's CUDA GPU (``local_rank`` under ``torchrun``),
then Apple's MPS, then the CPU. ``check_precision`` refuses what a device cannot run well:
fp16 autocast on the CPU (slow and poorly supported: use bf16) and bf16 on a GPU without it.
``autocast_context`` runs a forward pass in bf16/fp16 with PyTorch's autocast, so weights stay
fp32 (checkpoints are unchanged) and GFNet's global filter keeps its FFT in fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from gfnet_cli.errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for ``auto|cpu|cuda|mps`` (or ``cuda:1``); unusable ones are refused.

    ``auto`` (or ``None``) means CUDA if present, then MPS, then the CPU. ``auto`` and plain
    ``cuda`` take GPU ``local_rank`` (modulo the GPU count), so each ``torchrun`` process
    gets its own.
    """
    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = text.split(":", 1)[0]
    if kind not in DEVICES:
        raise UsageError(
            f"unknown device {name!r}: expected one of {', '.join(DEVICES)}", param="device"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "device cuda: no CUDA GPU is available (use auto or cpu)", param="device"
        )
    if kind == "mps" and not _mps_available():
        raise UsageError("device mps: Apple's MPS backend is not available here", param="device")
    if text == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    try:
        return torch.device(text)
    except RuntimeError as exc:
        raise UsageError(f"bad device {name!r}: {exc}", param="device") from None


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of ``fp32|bf16|fp16``."""
    try:
        return _DTYPES[precision.lower()]
    except (KeyError, AttributeError):
        raise UsageError(
            f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}",
            param="precision",
        ) from None


def check_precision(device: torch.device, precision: str) -> str:
    """Normalize ``precision`` and refuse combinations the device cannot run.

    fp16 autocast on the CPU is slow and poorly supported, so it is refused there; bf16 on
    CUDA needs a GPU that supports it (Ampere or newer).
    """
    precision = str(precision).lower()
    precision_dtype(precision)
    if precision == "fp16" and device.type == "cpu":
        raise UsageError(
            "precision fp16 needs a GPU; on the CPU use bf16 or fp32", param="precision"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(
            "precision bf16: this GPU does not support bfloat16; use fp16", param="precision"
        )
    return precision


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The dtype for running sums kept on ``device``: float64, or float32 on MPS (it has no
    float64, and moving a float64 tensor there fails)."""
    return torch.float32 if device.type == "mps" else torch.float64


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision``, ``None`` for fp32 (no autocast)."""
    dtype = precision_dtype(precision)
    return None if dtype == torch.float32 else dtype


def autocast_context(
    device: torch.device | str, precision: str
) -> contextlib.AbstractContextManager:
    """A context running the forward pass in ``precision`` on ``device``.

    fp32 is a no-op context; bf16/fp16 use ``torch.autocast`` for the device type.
    """
    device = torch.device(device) if isinstance(device, str) else device
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def inference(device: torch.device | str, precision: str = "fp32") -> Iterator[None]:
    """``torch.inference_mode`` plus autocast: the fastest eager context for a forward pass."""
    with torch.inference_mode(), autocast_context(device, precision):
        yield
