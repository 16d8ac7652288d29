"""The model configuration: everything needed to rebuild a GFNet and preprocess its inputs.

Saved as ``config.json`` beside ``model.safetensors``. Plain JSON types only, so any tool can
read it, and no pickle is ever involved.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gfnet_cli.errors import ConfigError
from gfnet_cli.labels import MAX_CLASS_NAME, MAX_CLASSES, MAX_LABEL_FILE_BYTES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 1
# PIL resampling filters the evaluation transform accepts (gfnet_cli.data.transforms).
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
PYRAMID_STAGES = 4
# What transformers keeps in config.json beside our fields (PreTrainedConfig's own keys, and
# the ones gfnet writes for it: docs/transformers.md). Read past, so a folder saved by either
# library loads in both; the labels come from ``class_names``, kept in step with ``id2label``.
TRANSFORMERS_KEYS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "auto_map",
        "chunk_size_feed_forward",
        "dtype",
        "id2label",
        "is_encoder_decoder",
        "label2id",
        "num_labels",
        "output_attentions",
        "output_hidden_states",
        "problem_type",
        "return_dict",
        "tie_word_embeddings",
        "torch_dtype",
        "transformers_version",
        "use_cache",
    }
)
# A pyramid model halves its grid three times after a patch-4 stem: inputs must divide by 32.
PYRAMID_DOWNSAMPLE = 8
# Fields holding one value per stage (a single value for a flat model), and their types.
_PER_STAGE: dict[str, type] = {"embed_dim": int, "depth": int, "mlp_ratio": float}
#: what a model predicts: one label per image, or one per pixel (docs/segmentation.md)
TASKS = ("classification", "segmentation")

# What a config may ask for (docs/trust.md). A config.json comes from anyone's Hub repository:
# every size in it is bounded before the model skeleton is built or any weight is read, so a
# hostile one is refused in milliseconds instead of building 100,000 blocks. The bounds sit
# far beyond the authors' models (depths up to 27 per stage, widths up to 768, 224-384 px).
LIMITS: dict[str, tuple[float, float]] = {
    "patch_size": (1, 256),
    "embed_dim": (1, 8192),
    "depth": (0, 128),
    "mlp_ratio": (1 / 64, 16),
    "img_size": (1, 8192),
    "in_chans": (1, 64),
    "num_classes": (0, MAX_CLASSES),
}
MAX_CONFIG_BYTES = MAX_LABEL_FILE_BYTES  # 100,000 class names fit; a larger one is refused
_INTEGERS = ("patch_size", "in_chans", "num_classes", "format_version")
_NUMBERS = ("drop_rate", "drop_path_rate", "crop_pct")
_STRINGS = ("kind", "interpolation", "model_type")


def to_pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Normalize an image size given as ``N`` or ``(H, W)`` to ``(H, W)``."""
    if isinstance(value, int):
        return (value, value)
    height, width = value
    return (int(height), int(width))


@dataclass(frozen=True)
class SegmentationConfig:
    """The Semantic FPN head of a segmentation model (mmsegmentation's FPN + FPNHead).

    The defaults are PVT's ADE20K configuration, which the paper's Table 2 follows: an FPN
    neck of 256 channels, a head of 128 channels, dropout 0.1 before the classifier.
    ``reduce_labels`` records that the model was trained on masks whose 0 ("other") was
    ignored and 1..N shifted to 0..N-1 (ADE20K's convention), so evaluation can do the same.
    """

    neck_channels: int = 256
    head_channels: int = 128
    dropout: float = 0.1
    reduce_labels: bool = False

    def validate(self) -> None:
        for name in ("neck_channels", "head_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"segmentation.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"segmentation.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.reduce_labels, bool):
            raise ConfigError(
                f"segmentation.reduce_labels must be true or false, got {self.reduce_labels!r}"
            )

    @classmethod
    def from_dict(cls, data: Any) -> SegmentationConfig:
        if not isinstance(data, dict):
            raise ConfigError("config.json: segmentation must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config.json: segmentation has unknown fields: {', '.join(unknown)}")
        return cls(**data)


@dataclass
class GFNetConfig:
    """Architecture plus preprocessing of one GFNet.

    ``embed_dim``, ``depth`` and ``mlp_ratio`` are single values for a flat model and four
    values (one per stage) for a pyramid model. ``init_values`` is the layer-scale init of
    pyramid blocks; ``None`` means blocks without layer scale.

    ``task`` is ``"classification"`` (a label per image) or ``"segmentation"`` (a label per
    pixel, a Semantic FPN head described by ``segmentation``); ``num_classes`` and
    ``class_names`` are the labels of either. A classification config.json leaves both keys
    out, as configs written before segmentation existed do.
    """

    kind: Literal["flat", "pyramid"] = "flat"
    patch_size: int = 16
    embed_dim: int | list[int] = 384
    depth: int | list[int] = 12
    mlp_ratio: float | list[float] = 4.0
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    init_values: float | None = None
    img_size: int | list[int] = 224
    in_chans: int = 3
    num_classes: int = 1000
    class_names: list[str] | None = None
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    architecture: str | None = None
    model_type: str = "gfnet"
    format_version: int = FORMAT_VERSION
    task: str = "classification"
    segmentation: SegmentationConfig | None = None

    def __post_init__(self) -> None:
        self._check_types()
        self._normalize()
        self.validate()

    def _check_types(self) -> None:
        """Refuse a value of the wrong type before anything converts it (``depth: 2.5`` is
        not silently 2), and sizes beyond :data:`LIMITS` before anything is built from them."""
        for name in _INTEGERS:
            _check_int(name, getattr(self, name))
        for name in _NUMBERS:
            _check_number(name, getattr(self, name))
        for name in _STRINGS:
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.architecture is not None and not isinstance(self.architecture, str):
            raise ConfigError(f"architecture must be a string, got {self.architecture!r}")
        if self.init_values is not None:
            _check_number("init_values", self.init_values)
        self._check_sizes()
        self._check_class_names()
        if self.format_version > FORMAT_VERSION or self.format_version < 1:
            raise ConfigError(
                f"format_version {self.format_version}: this gfnet reads config.json format "
                f"{FORMAT_VERSION}; a newer format needs a newer gfnet-cli"
            )
        for name, (low, high) in LIMITS.items():
            values = getattr(self, name)
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if not low <= value <= high:
                    raise ConfigError(f"{name} must be in [{low:g}, {high:g}], got {value}")

    def _check_sizes(self) -> None:
        for name, kind in _PER_STAGE.items():
            values = getattr(self, name)
            values = values if isinstance(values, (list, tuple)) else [values]
            if len(values) > PYRAMID_STAGES:
                raise ConfigError(f"{name} has {len(values)} values; at most {PYRAMID_STAGES}")
            for value in values:
                (_check_int if kind is int else _check_number)(name, value)
        sizes = self.img_size if isinstance(self.img_size, (list, tuple)) else [self.img_size]
        if len(sizes) not in (1, 2):
            raise ConfigError(f"img_size must be N or [height, width], got {self.img_size!r}")
        for value in sizes:
            _check_int("img_size", value)
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or len(values) > LIMITS["in_chans"][1]:
                raise ConfigError(f"{name} must be a list of one number per input channel")
            for value in values:
                _check_number(name, value)

    def _check_class_names(self) -> None:
        names = self.class_names
        if names is None:
            return
        if not isinstance(names, (list, tuple)) or len(names) > LIMITS["num_classes"][1]:
            raise ConfigError("class_names must be a list of strings, one per class")
        for name in names:
            if not isinstance(name, str) or len(name) > MAX_CLASS_NAME:
                raise ConfigError(
                    f"class_names must hold strings of at most {MAX_CLASS_NAME} characters, "
                    f"got {str(name)[:40]!r}"
                )

    def _normalize(self) -> None:
        """One spelling per value, so equal configs compare and serialize equal.

        Per-stage values become lists (a pyramid's single value is repeated for its four
        stages), a square ``img_size`` becomes one int, ``mean``/``std`` lists of floats.
        Nothing is checked here; :meth:`validate` does that.
        """
        for name in _PER_STAGE:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, _as_list(value, len(value), _PER_STAGE[name]))
            elif self.kind == "pyramid":
                setattr(self, name, _as_list(value, PYRAMID_STAGES, _PER_STAGE[name]))
        if isinstance(self.img_size, (list, tuple)):
            height, width = to_pair(self.img_size)
            self.img_size = height if height == width else [height, width]
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        if isinstance(self.segmentation, dict):
            self.segmentation = SegmentationConfig.from_dict(self.segmentation)
        if self.task == "segmentation" and self.segmentation is None:
            self.segmentation = SegmentationConfig()

    # ------------------------------------------------------------------ derived values
    @property
    def image_size(self) -> tuple[int, int]:
        return to_pair(self.img_size)

    @property
    def widths(self) -> list[int]:
        return _as_list(self.embed_dim, self.num_stages, int)

    @property
    def depths(self) -> list[int]:
        return _as_list(self.depth, self.num_stages, int)

    @property
    def mlp_ratios(self) -> list[float]:
        return _as_list(self.mlp_ratio, self.num_stages, float)

    @property
    def num_stages(self) -> int:
        return PYRAMID_STAGES if self.kind == "pyramid" else 1

    @property
    def stride(self) -> int:
        """The factor by which the input size must be divisible."""
        return self.patch_size * (PYRAMID_DOWNSAMPLE if self.kind == "pyramid" else 1)

    def grid_sizes(self, image_size: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Token grid (rows, cols) of every stage for an input of ``image_size``."""
        height, width = image_size or self.image_size
        rows, cols = height // self.patch_size, width // self.patch_size
        grids = [(rows, cols)]
        for _ in range(self.num_stages - 1):
            rows, cols = rows // 2, cols // 2
            grids.append((rows, cols))
        return grids

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        """Refuse an input size this model cannot take, or one too large to allocate."""
        height, width = image_size
        largest = int(LIMITS["img_size"][1])
        if max(height, width) > largest:
            raise ConfigError(
                f"image size {height}x{width} is too large: at most {largest} pixels a side"
            )
        if height <= 0 or width <= 0 or height % self.stride or width % self.stride:
            raise ConfigError(
                f"image size {height}x{width} does not suit this {self.kind} GFNet: height and "
                f"width must be positive multiples of {self.stride}"
            )

    @property
    def labels(self) -> list[str]:
        """Class names, or ``class_<i>`` where the model does not know them."""
        if self.class_names and len(self.class_names) == self.num_classes:
            return list(self.class_names)
        return [f"class_{i}" for i in range(self.num_classes)]

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field that cannot describe a GFNet."""
        self._check_architecture()
        self.check_image_size(self.image_size)
        self._check_preprocessing()
        self._check_task()

    def _check_architecture(self) -> None:
        if self.kind not in ("flat", "pyramid"):
            raise ConfigError(f"unknown model kind {self.kind!r}: expected 'flat' or 'pyramid'")
        if self.model_type != "gfnet":
            raise ConfigError(f"config.json describes a {self.model_type!r} model, not a GFNet")
        for name in _PER_STAGE:
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != self.num_stages:
                raise ConfigError(
                    f"{name} has {len(value)} values; a {self.kind} GFNet needs {self.num_stages}"
                )
        if any(w <= 0 for w in self.widths) or any(d < 0 for d in self.depths):
            raise ConfigError("embed_dim must be positive and depth non-negative")
        if self.patch_size <= 0:
            raise ConfigError("patch_size must be positive")
        if self.num_classes < 0:
            raise ConfigError("num_classes must be non-negative")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"config.json lists {len(self.class_names)} class names for "
                f"{self.num_classes} classes"
            )

    def _check_preprocessing(self) -> None:
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ConfigError("mean and std need one value per input channel")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        for name in ("drop_rate", "drop_path_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ConfigError(f"std values must be positive, got {self.std}")
        if str(self.interpolation).lower() not in INTERPOLATIONS:
            raise ConfigError(
                f"unknown interpolation {self.interpolation!r}: choose one of "
                f"{', '.join(INTERPOLATIONS)}"
            )

    def _check_task(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}: expected {' or '.join(TASKS)}")
        if self.task == "classification":
            if self.segmentation is not None:
                raise ConfigError("segmentation settings need task 'segmentation'")
            return
        if not isinstance(self.segmentation, SegmentationConfig):
            raise ConfigError("config.json: segmentation must be a JSON object")
        if self.num_classes < 1:
            raise ConfigError("a segmentation model needs num_classes of at least 1")
        self.segmentation.validate()

    @property
    def is_segmentation(self) -> bool:
        return self.task == "segmentation"

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; a classification config has no ``task``/``segmentation`` keys,
        so its config.json reads the same in releases from before segmentation."""
        data = dataclasses.asdict(self)
        if self.task == "classification":
            del data["task"], data["segmentation"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GFNetConfig:
        if not isinstance(data, dict):
            raise ConfigError("config.json must hold a JSON object")
        data = _without_transformers_keys(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config.json has unknown fields: {', '.join(unknown)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:  # wrong value types surface here
            raise ConfigError(f"config.json is invalid: {exc}") from None

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory_or_file: str | Path) -> GFNetConfig:
        path = Path(directory_or_file)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{path} not found: a MODEL folder needs a config.json")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path} is {path.stat().st_size:,} bytes: a config.json holds at most "
                f"{MAX_CONFIG_BYTES:,}"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc})") from None
        except RecursionError:
            raise ConfigError(f"{path} is not a config: its JSON is nested too deeply") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> GFNetConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ summaries
    def describe(self) -> str:
        height, width = self.image_size
        size = f"{height}" if height == width else f"{height}x{width}"
        if self.kind == "flat":
            arch = f"flat, patch {self.patch_size}, width {self.widths[0]}, depth {self.depths[0]}"
        else:
            widths = "/".join(map(str, self.widths))
            depths = "/".join(map(str, self.depths))
            arch = f"pyramid, patch {self.patch_size}, widths {widths}, depths {depths}"
        if self.is_segmentation:
            return f"{arch}, Semantic FPN, {size} px crops, {self.num_classes} classes"
        return f"{arch}, {size} px, {self.num_classes} classes"


def _without_transformers_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without :data:`TRANSFORMERS_KEYS`; ``id2label`` names the classes when
    ``class_names`` does not (a config.json written for transformers alone)."""
    ours = {key: value for key, value in data.items() if key not in TRANSFORMERS_KEYS}
    id2label = data.get("id2label")
    if ours.get("class_names") is None and isinstance(id2label, dict) and id2label:
        try:
            names = [str(id2label[key]) for key in sorted(id2label, key=int)]
        except (TypeError, ValueError):
            return ours
        placeholders = {f"{stem}_{i}" for i in range(len(names)) for stem in ("LABEL", "class")}
        if len(names) == ours.get("num_classes") and not set(names) <= placeholders:
            ours["class_names"] = names
    return ours
def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


def _as_list(value: Any, length: int, kind: type) -> list:
    if isinstance(value, (list, tuple)):
        return [kind(v) for v in value]
    return [kind(value)] * length


def crop_size_to_resize(img_size: int, crop_pct: float) -> int:
    """The shorter-side resize before a center crop of ``img_size`` (the authors' recipe)."""
    return int(math.floor(img_size / crop_pct))
