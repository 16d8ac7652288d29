"""Devices and numeric precision: one rule for every command.

``resolve_device("auto")`` picks this process's CUDA GPU (``local_rank`` under ``torchrun``),
then Apple's MPS (macOS 14 or later: FFTs and bf16 on MPS need it), then the CPU.
``check_precision`` refuses what a device cannot run well: fp16 autocast on the CPU (slow and
poorly supported: use bf16) and bf16 on a GPU without native bf16.
``autocast_context`` runs a forward pass in bf16/fp16 with PyTorch's autocast, so weights stay
fp32 (checkpoints are unchanged) and GFNet's global filter keeps its FFT in fp32.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Iterator

import torch

from gfnet_cli.errors import UsageError

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


MPS_MIN_MACOS = 14  # PyTorch's MPS FFTs and bf16 autocast need macOS 14 (Sonoma)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def check_mps_macos(version: str) -> None:
    """Refuse MPS on a macOS ``version`` (``platform.mac_ver()[0]``, e.g. ``"13.6.1"``) older
    than :data:`MPS_MIN_MACOS`: every GFNet forward runs FFTs, which MPS lacks before it, and
    bf16 autocast fails there too. An empty or unreadable version (not macOS) passes."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        return
    if major < MPS_MIN_MACOS:
        raise UsageError(
            f"device mps needs macOS {MPS_MIN_MACOS} or later for GFNet's FFTs and bf16 (this "
            f"is macOS {version}): use device cpu",
            param="device",
        )


def _mps_usable() -> bool:
    """MPS is present and this macOS runs GFNet on it (``auto`` then passes it over)."""
    if not _mps_available():
        return False
    try:
        check_mps_macos(platform.mac_ver()[0])
    except UsageError:
        return False
    return True


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
        if _mps_usable():
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
    if kind == "mps":
        check_mps_macos(platform.mac_ver()[0])
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
    CUDA needs a GPU that computes it natively (Ampere or newer), not by emulation.
    """
    precision = str(precision).lower()
    precision_dtype(precision)
    if precision == "fp16" and device.type == "cpu":
        raise UsageError(
            "precision fp16 needs a GPU; on the CPU use bf16 or fp32", param="precision"
        )
    if precision == "bf16" and device.type == "cuda" and not _native_bf16(device):
        raise UsageError(
            "precision bf16: this GPU has no native bfloat16 (Ampere or newer has it); "
            "use fp16",
            param="precision",
        )
    return precision


def _native_bf16(device: torch.device) -> bool:
    """Whether the CUDA GPU ``device`` computes bf16 natively. ``is_bf16_supported()`` alone
    also counts emulation (pre-Ampere GPUs run bf16 kernels emulated, far slower than fp16)
    and asks about the current GPU, not necessarily ``device``."""
    with torch.cuda.device(device):  # an index-less device: the current GPU
        return torch.cuda.is_bf16_supported(including_emulation=False)


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


# cuBLAS is deterministic only with one of these fixed workspaces (NVIDIA's cuBLAS notes).
CUBLAS_DETERMINISTIC_WORKSPACES = (":4096:8", ":16:8")


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """PyTorch's deterministic mode inside the context, the previous settings back after it.

    What a bit-identical rerun on a GPU needs: deterministic kernels
    (``torch.use_deterministic_algorithms``, strict: an op without one raises rather than
    silently breaking the guarantee; GFNet's training ops, cuFFT's FFTs included, have one),
    cuDNN's deterministic convolutions without autotuning, no TF32 (matmuls and convolutions
    in full fp32), and a fixed cuBLAS workspace (``CUBLAS_WORKSPACE_CONFIG``). These are
    process-wide switches: they apply to every thread while the context is open, and they are
    restored when it closes, so calling ``finetune`` from a notebook leaves the fast settings
    in place afterwards. ``CUBLAS_WORKSPACE_CONFIG`` stays set: cuBLAS reads it once, when
    CUDA first uses it, so it must be set before that (a warning says when CUDA was already
    running); another value than the two deterministic ones is refused.
    """
    if not enabled:
        yield
        return
    _set_cublas_workspace()
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.conv.fp32_precision,
    )
    try:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        # The per-backend precision API only: mixing it with the legacy allow_tf32 flags
        # makes torch refuse to read them.
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2:4]
        torch.backends.cuda.matmul.fp32_precision = previous[4]
        torch.backends.cudnn.conv.fp32_precision = previous[5]


def _set_cublas_workspace() -> None:
    value = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if value in CUBLAS_DETERMINISTIC_WORKSPACES:
        return
    if value:
        raise UsageError(
            f"deterministic needs CUBLAS_WORKSPACE_CONFIG={CUBLAS_DETERMINISTIC_WORKSPACES[0]} "
            f"(or {CUBLAS_DETERMINISTIC_WORKSPACES[1]}), but the environment sets {value!r}",
            param="deterministic",
        )
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC_WORKSPACES[0]
    if torch.cuda.is_initialized():
        logger.warning(
            "CUBLAS_WORKSPACE_CONFIG set after CUDA started in this process: runs are exact "
            "only if cuBLAS was not used before; set it in the environment to be sure"
        )
