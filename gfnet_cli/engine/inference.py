"""What every inference command shares: a MODEL ready to run, and checks of their arguments.

``predict`` and ``evaluate`` (and later commands that run a trained model) load MODEL here,
at the image size and on the device the caller asked for, in eval mode. Devices and precision
themselves live in :mod:`gfnet_cli.device`. MODEL may also be a file written by ``gfnet
export --format onnx``: it is then run by onnxruntime (:class:`OnnxModel`), which has the
same ``config`` and is called the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from gfnet_cli.engine.onnx_model import OnnxModel, is_onnx_file, load_onnx_model
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.resolve import load_model, resolve_model
from gfnet_cli.models.config import LIMITS, GFNetConfig, to_pair
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.models.segmentation import GFNetForSegmentation

ProgressCallback = Callable[[int, int | None], None]
"""``progress(completed, total)``: work done so far, and the total when it is known.

Library functions that take a while accept one (default: silent); the CLI passes a bar.
"""


def prepare_model(
    model: str | GFNetArchitecture | OnnxModel,
    img_size: int | tuple[int, int] | None,
    device: torch.device,
    precision: str = "fp32",
    *,
    allow_onnx: bool = False,
) -> GFNetArchitecture | OnnxModel:
    """Load MODEL at ``img_size`` on ``device`` in eval mode (a given model is not resized).

    A loaded :class:`GFNet` accepts any valid size at run time (its filters are resized and
    cached per size), so a caller's model is used as is rather than changed. With
    ``allow_onnx`` (commands that only need logits: ``predict``, ``evaluate``), an exported
    ``.onnx`` MODEL is run by onnxruntime at its exported size, in fp32; other commands
    need the network itself and refuse it.
    """
    if isinstance(model, OnnxModel) or is_onnx_file(model):
        if not allow_onnx:
            raise UsageError(
                f"{model} is an exported ONNX file: this needs the PyTorch network (a MODEL "
                "folder, Hub id or zoo name)",
                param="model",
            )
        if isinstance(model, OnnxModel):
            model.check_image_size(None if img_size is None else _size(img_size))
            return model
        return load_onnx_model(str(model), img_size=img_size, device=device, precision=precision)
    if isinstance(model, GFNetArchitecture):
        if img_size is not None:
            model.config.check_image_size(_size(img_size))
        return model.eval().to(device)
    if img_size is None:
        return load_model(str(model), device=device)
    size = _size(img_size)
    net = load_model(str(model), device=device)
    net.config.check_image_size(size)  # a clear message before any resizing
    if size != net.config.image_size:
        net.set_image_size(img_size)
    return net


def model_task(model: str | Path | GFNetArchitecture | GFNetForSegmentation | OnnxModel) -> str:
    """The task MODEL was made for (its config.json's ``task``), read before loading weights,
    so a command can pick its data pipeline and refuse a mismatch before any work."""
    if isinstance(model, (GFNetArchitecture, GFNetForSegmentation, OnnxModel)):
        return getattr(model.config, "task", None) or "classification"
    if is_onnx_file(model):
        if _onnx_task(Path(str(model))) == "segmentation":
            raise _onnx_segmentation_error(model)
        return "classification"
    return GFNetConfig.load(resolve_model(str(model))).task or "classification"


def prepare_segmentation_model(
    model: str | Path | GFNetForSegmentation, device: torch.device
) -> GFNetForSegmentation:
    """A segmentation MODEL on ``device`` in eval mode (it runs at any input size)."""
    if isinstance(model, GFNetForSegmentation):
        return model.eval().to(device)
    net = load_model(str(model), device=device)
    if not isinstance(net, GFNetForSegmentation):
        raise UsageError(f"{model_name(model)} is not a segmentation model", param="model")
    return net.eval().to(device)


def refuse_onnx_segmentation(net: GFNetArchitecture | OnnxModel) -> None:
    """An exported segmentation ``.onnx`` file is fixed to its exported size; whole-image
    scoring and mask writing need the network: refused, saying what to pass instead."""
    if isinstance(net, OnnxModel) and net.config.task == "segmentation":
        raise _onnx_segmentation_error(net.path)


def _onnx_segmentation_error(path: object) -> UsageError:
    return UsageError(
        f"{path} is an exported segmentation network: evaluate and predict run the "
        "segmentation MODEL folder it was exported from (images differ in size)",
        param="model",
    )


def _onnx_task(path: Path) -> str | None:
    """The task in an exported file's gfnet metadata, read without a runtime (None when the
    ``onnx`` package is absent or the file carries none: the runtime's load decides then)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        proto = onnx.load(str(path), load_external_data=False)
        props = {prop.key: prop.value for prop in proto.metadata_props}
        return json.loads(props.get("config") or "{}").get("task")
    except Exception:  # unreadable here: load_onnx_model says why, with its own message
        return None


def model_name(model: str | Path | GFNetArchitecture | GFNetForSegmentation | OnnxModel) -> str:
    """How results name MODEL: the argument as given, or a loaded model's architecture."""
    if isinstance(model, (GFNetArchitecture, GFNetForSegmentation, OnnxModel)):
        return model.config.architecture or "GFNet"
    return str(model)


def default_workers(requested: int | None) -> int:
    """DataLoader workers: ``requested``, or one per spare core (at most 8)."""
    if requested is not None:
        return requested
    return min(8, max(0, (os.cpu_count() or 1) - 1))


def check_at_least(param: str, value: int | None, minimum: int) -> None:
    """Refuse ``value`` below ``minimum``, naming the parameter (``None`` means unset)."""
    if value is not None and value < minimum:
        raise UsageError(f"{param} must be at least {minimum}, got {value}", param=param)


def check_img_size(img_size: int | tuple[int, int] | None, param: str = "img_size") -> None:
    """Refuse an input size that is not positive or is beyond what any model may take
    (:data:`~gfnet_cli.models.config.LIMITS`), before anything is loaded or allocated."""
    if img_size is not None:
        _size(img_size, param)


def _size(img_size: int | tuple[int, int], param: str = "img_size") -> tuple[int, int]:
    size = to_pair(img_size)
    largest = int(LIMITS["img_size"][1])
    if min(size) <= 0:
        raise UsageError(f"{param} must be positive, got {img_size}", param=param)
    if max(size) > largest:
        raise UsageError(
            f"{param} {img_size} is too large: at most {largest} pixels a side", param=param
        )
    return size
