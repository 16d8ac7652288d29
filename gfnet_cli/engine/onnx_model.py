"""Exported GFNets: the metadata every exported file carries, and running an ``.onnx`` file.

``gfnet export`` writes the model's preprocessing and labels into the file itself (ONNX
``metadata_props``; a ``.pt2``'s extra file ``gfnet.json``), so a consumer needs nothing else
to feed it images and name its outputs. :class:`OnnxModel` reads them back and runs the file
with onnxruntime wherever ``predict`` and ``evaluate`` run a :class:`GFNet`: same config,
same transform, logits as a torch tensor.

onnxruntime is an optional extra (``gfnet-cli[export]``), imported only when a file is run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gfnet_cli import __version__
from gfnet_cli.errors import ConfigError, MissingDependencyError, UsageError, first_line
from gfnet_cli.models.config import GFNetConfig, crop_size_to_resize

logger = logging.getLogger(__name__)

ONNX_SUFFIX = ".onnx"
PT2_EXTRA_FILE = "gfnet.json"
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"
METADATA_VERSION = 1
# Keys of the metadata, in the order written. Values are strings; lists and objects are JSON.
METADATA_KEYS = (
    "gfnet.metadata_version",
    "producer",
    "architecture",
    "num_classes",
    "class_names",
    "input_name",
    "output_name",
    "input_size",
    "batch_size",
    "layout",
    "pixel_range",
    "mean",
    "std",
    "crop_pct",
    "resize_size",
    "interpolation",
    "fft",
    "config",
)


# ---------------------------------------------------------------------------- metadata
def export_metadata(
    config: GFNetConfig, *, fft: str, batch_size: int | None = None
) -> dict[str, Any]:
    """What a consumer needs to preprocess images for, and label the outputs of, an export.

    ``config`` is the model's at the exported size. Preprocessing is the authors' evaluation
    transform: resize the shorter side to ``resize_size`` (``interpolation``), center-crop
    ``input_size``'s height x width, scale pixels to [0, 1], normalize with ``mean``/``std``,
    channels first. Values are plain JSON types; :func:`metadata_props` gives the strings an
    ONNX file stores.
    """
    height, width = config.image_size
    values: dict[str, Any] = {
        "gfnet.metadata_version": METADATA_VERSION,
        "producer": f"gfnet-cli {__version__}",
        "architecture": config.architecture or "",
        "num_classes": config.num_classes,
        "class_names": config.labels,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_size": [config.in_chans, height, width],
        "batch_size": "dynamic" if batch_size is None else batch_size,
        "layout": "NCHW",
        "pixel_range": [0, 1],
        "mean": config.mean,
        "std": config.std,
        "crop_pct": config.crop_pct,
        "resize_size": crop_size_to_resize(min(height, width), config.crop_pct),
        "interpolation": config.interpolation,
        "fft": fft,
        "config": config.to_dict(),
    }
    return {key: values[key] for key in METADATA_KEYS}


def metadata_props(values: dict[str, Any]) -> dict[str, str]:
    """:func:`export_metadata` as ONNX ``metadata_props`` strings: strings as they are,
    everything else as JSON."""
    return {key: v if isinstance(v, str) else json.dumps(v) for key, v in values.items()}


def config_from_metadata(metadata: dict[str, Any], source: str) -> GFNetConfig:
    """The :class:`GFNetConfig` an exported file was made from (its exported size).

    ``metadata``: an ONNX file's ``metadata_props`` (strings) or a ``.pt2``'s ``gfnet.json``.
    """
    text = metadata.get("config")
    if isinstance(text, dict):
        text = json.dumps(text)
    if not text:
        raise ConfigError(
            f"{source} carries no gfnet metadata: only files written by `gfnet export` can be "
            "used as a MODEL"
        )
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: its gfnet metadata is not valid JSON ({exc})") from None
    try:
        return GFNetConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def decode_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """ONNX ``metadata_props`` back to :func:`export_metadata`'s values (JSON decoded)."""
    decoded: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return decoded


# ---------------------------------------------------------------------------- dependencies
def is_onnx_file(model: object) -> bool:
    """Whether a MODEL argument names an exported ``.onnx`` file (by suffix, as users do)."""
    return isinstance(model, (str, Path)) and str(model).strip().lower().endswith(ONNX_SUFFIX)


def import_onnxruntime(feature: str = "running an exported .onnx MODEL") -> Any:
    """The ``onnxruntime`` module, or :class:`MissingDependencyError` naming the extra."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(feature, "export") from None
    return onnxruntime


# ---------------------------------------------------------------------------- running
class OnnxModel:
    """An exported ``.onnx`` GFNet run by onnxruntime, used where a :class:`GFNet` is.

    It has what ``predict`` and ``evaluate`` read from a model (``config``, ``num_classes``)
    and is called on a float (B, 3, H, W) batch, returning logits as a float32 tensor on the
    batch's device. A file exported with a fixed batch size is fed in chunks of that size
    (the last one padded). ``device``: ``cpu``, or ``cuda`` for onnxruntime's CUDA provider
    (the CPU with a warning where this onnxruntime has none).
    """

    def __init__(
        self, path: str | Path, device: str | torch.device = "cpu", threads: int | None = None
    ) -> None:
        ort = import_onnxruntime()
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise UsageError(f"{self.path}: no such .onnx file")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings would clutter stderr
        # Idle threads sleep instead of spinning: between batches the cores belong to the
        # DataLoader workers decoding the next images (a spinning pool would take them).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        self.providers = _providers(ort, torch.device(device))
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=self.providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UsageError(
                f"{self.path} cannot be loaded by onnxruntime {ort.__version__}: {first_line(exc)}"
            ) from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.config = config_from_metadata(self.metadata, str(self.path))
        self.num_classes = self.config.num_classes
        self.fft = self.metadata.get("fft", "")
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = tuple(model_input.shape)
        batch = self.input_shape[0] if self.input_shape else None
        self.batch_size = batch if isinstance(batch, int) and batch > 0 else None

    @property
    def image_size(self) -> tuple[int, int]:
        """The (height, width) the file was exported for: the only size it accepts."""
        return self.config.image_size

    @property
    def device(self) -> str:
        """Where onnxruntime runs the file: ``cuda`` or ``cpu``."""
        return "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def eval(self) -> OnnxModel:
        """Nothing to switch (an exported graph is always in inference mode); for symmetry."""
        return self

    def check_image_size(self, img_size: tuple[int, int] | None) -> None:
        """Refuse another input size: the exported graph has its size built in."""
        if img_size is not None and tuple(img_size) != self.image_size:
            height, width = self.image_size
            raise UsageError(
                f"{self.path.name} was exported for {height}x{width} inputs, not "
                f"{img_size[0]}x{img_size[1]}: export the MODEL again with img_size "
                f"{img_size[0]}x{img_size[1]}",
                param="img_size",
            )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.detach().float().cpu().numpy()
        chunk = self.batch_size or max(1, len(batch))
        outputs = []
        for start in range(0, len(batch), chunk):
            part = batch[start : start + chunk]
            missing = chunk - len(part)
            if missing and self.batch_size is not None:
                part = np.concatenate([part, np.zeros((missing, *part.shape[1:]), part.dtype)])
            logits = self.session.run(None, {self.input_name: np.ascontiguousarray(part)})[0]
            outputs.append(logits[: chunk - missing])
        logits = np.concatenate(outputs) if outputs else np.zeros((0, self.num_classes))
        return torch.from_numpy(np.asarray(logits, dtype=np.float32)).to(images.device)

    def __repr__(self) -> str:
        height, width = self.image_size
        batch = self.batch_size or "dynamic"
        return (
            f"OnnxModel({self.path.name}, {height}x{width}, batch {batch}, fft {self.fft}, "
            f"{self.device})"
        )


def _providers(ort: Any, device: torch.device) -> list[str]:
    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        logger.warning(
            "this onnxruntime has no CUDA provider (pip install onnxruntime-gpu): running the "
            ".onnx MODEL on the CPU"
        )
    elif device.type != "cpu":
        raise UsageError(
            f"device {device.type}: an exported .onnx MODEL runs on cpu or cuda", param="device"
        )
    return ["CPUExecutionProvider"]


def load_onnx_model(
    path: str | Path,
    *,
    img_size: int | tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> OnnxModel:
    """An exported ``.onnx`` MODEL ready to run; ``img_size`` must be the exported size."""
    if str(precision).lower() != "fp32":
        raise UsageError(
            f"precision {precision}: an exported .onnx MODEL runs in fp32, as it was exported",
            param="precision",
        )
    model = OnnxModel(path, device=device)
    if img_size is not None:
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        model.check_image_size(size)
    return model


def max_abs_diff(reference: torch.Tensor, other: np.ndarray | torch.Tensor) -> float:
    """The largest absolute difference (``inf`` where either side is not finite)."""
    other = torch.as_tensor(np.asarray(other)) if not isinstance(other, torch.Tensor) else other
    diff = (reference.detach().float().cpu() - other.detach().float().cpu()).abs()
    value = float(diff.max()) if diff.numel() else 0.0
    return value if math.isfinite(value) else math.inf
