"""Devices and numeric precision, shared by predict, evaluate, profile and finetune.

``resolve_device("auto")`` picks CUDA, then MPS, then the CPU. ``autocast_context`` runs a
forward pass in bf16/fp16 with PyTorch's autocast, so weights stay fp32 (checkpoints are
unchanged) and GFNet's global filter keeps its FFT in fp32 (it casts its input itself).
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


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``auto|cpu|cuda|mps`` (or ``cuda:1``); unusable ones are refused.

    ``auto`` (or ``None``) means CUDA if present, then Apple's MPS, then the CPU.
    """
    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = text.split(":", 1)[0]
    if kind not in DEVICES:
        raise UsageError(f"unknown device {name!r}: expected one of {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available (try --device auto or cpu)")
    if kind == "mps" and not _mps_available():
        raise UsageError("--device mps: Apple's MPS backend is not available here")
    try:
        return torch.device(text)
    except RuntimeError as exc:
        raise UsageError(f"bad device {name!r}: {exc}") from None


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of ``fp32|bf16|fp16``."""
    try:
        return _DTYPES[precision.lower()]
    except (KeyError, AttributeError):
        raise UsageError(
            f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}"
        ) from None


def check_precision(device: torch.device, precision: str) -> str:
    """Normalize ``precision`` and refuse combinations the device cannot run.

    fp16 autocast on the CPU is slow and poorly supported, so it is refused there; bf16 needs
    a GPU that supports it (Ampere or newer) when the device is CUDA.
    """
    precision = precision.lower()
    precision_dtype(precision)
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16: this GPU does not support bfloat16; use fp16")
    return precision


def autocast_context(
    device: torch.device | str, precision: str
) -> contextlib.AbstractContextManager:
    """A context running the forward pass in ``precision`` on ``device``.

    fp32 is a no-op context; bf16/fp16 use ``torch.autocast`` for the device type.
    """
    device = torch.device(device) if isinstance(device, str) else device
    dtype = precision_dtype(precision)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def inference(device: torch.device | str, precision: str = "fp32") -> Iterator[None]:
    """``torch.inference_mode`` plus autocast: the fastest eager context for a forward pass."""
    with torch.inference_mode(), autocast_context(device, precision):
        yield
