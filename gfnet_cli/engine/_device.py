"""Inference set-up shared by predict and evaluate: ``--device``, ``--precision``, ``--img-size``.

Kept tiny on purpose: the device/autocast helpers of ``gfnet_cli.precision`` can replace
``resolve_device`` and ``autocast`` once they land.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from gfnet_cli.errors import UsageError
from gfnet_cli.models.config import to_pair
from gfnet_cli.models.gfnet import GFNet

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is cuda, then mps, then cpu; an unavailable device is a usage error."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise UsageError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: Apple MPS is not available (use --device cpu or auto)")
    return torch.device(name)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to bf16/fp16 for the forward pass; fp32 runs as is."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def prepare_model(
    model: str | GFNet, img_size: int | tuple[int, int] | None, device: torch.device
) -> GFNet:
    """Load MODEL at ``img_size`` on ``device`` in eval mode (a given model is not resized).

    A loaded :class:`GFNet` accepts any valid size at run time (its filters are resized and
    cached per size), so a caller's model is used as is rather than changed.
    """
    if isinstance(model, GFNet):
        if img_size is not None:
            model.config.check_image_size(_size(img_size))
        return model.eval().to(device)
    from gfnet_cli.models.factory import load_model

    if img_size is None:
        return load_model(str(model), device=device)
    size = _size(img_size)
    net = load_model(str(model), device=device)
    net.config.check_image_size(size)  # a clear message before any resizing
    if size != net.config.image_size:
        net.set_image_size(img_size)
    return net


def _size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    size = to_pair(img_size)
    if min(size) <= 0:
        raise UsageError(f"--img-size must be positive, got {img_size}")
    return size
