"""The training recipe: :class:`TrainConfig` and every check on it, in one place.

Every value a run takes is a field of :class:`TrainConfig` (defaults: the recipe in
docs/training.md). :func:`check_config` refuses what would make a run useless before any data
is read, so a bad value costs a second, not hours. Named recipes (the authors' presets) belong
here too: they are TrainConfig values, checked by the same function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gfnet_cli.data.augment import DEFAULT_CROP_SCALE
from gfnet_cli.data.streaming import DEFAULT_SHUFFLE_BUFFER
from gfnet_cli.device import check_precision
from gfnet_cli.errors import UsageError
from gfnet_cli.push import check_push_target

_HYPERPARAMETERS = (
    "epochs", "batch_size", "lr", "min_lr", "weight_decay", "decay_all", "warmup_epochs",
    "label_smoothing", "drop_path", "clip_grad", "augment", "crop_scale", "hflip", "mixup",
    "cutmix", "mix_prob", "mix_switch_prob", "seed", "precision", "img_size", "from_scratch",
    "streaming",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything ``gfnet finetune`` accepts; defaults are the recipe in docs/training.md."""

    model: str
    dataset: str
    output_dir: Path
    from_scratch: bool = False
    patch_size: int | None = None
    embed_dim: int | list[int] | None = None
    depth: int | list[int] | None = None
    img_size: int | None = None
    crop_pct: float | None = None
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    decay_all: bool = False
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    drop_path: float | None = None
    clip_grad: float = 1.0
    augment: bool = True
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE
    hflip: float = 0.5
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    seed: int = 0
    precision: str = "fp32"
    device: str = "auto"
    num_workers: int = 2
    checkpoint_every: int = 500
    resume: bool = False
    overwrite: bool = False
    push_to: str | None = None
    train_split: str | None = None
    eval_split: str | None = None
    dataset_config: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    log_every: int = 10
    streaming: bool = False
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER

    def hyperparameters(self) -> dict[str, Any]:
        """The recipe as plain values, for the model card and train_results.json."""
        values = {k: getattr(self, k) for k in _HYPERPARAMETERS}
        values["crop_scale"] = list(self.crop_scale)
        if self.streaming:
            values["shuffle_buffer"] = self.shuffle_buffer
        return values


def check_config(config: TrainConfig, device: torch.device) -> None:
    """Refuse a recipe that cannot run on ``device``, before any data is read.

    Raises :class:`UsageError` naming the parameter (``error.param``).
    """
    check_precision(device, config.precision)  # fp16 needs a GPU, bf16 a GPU that has it
    _check_architecture(config)
    _check_schedule(config)
    _check_augmentation(config)
    _check_mixing(config)
    if config.num_workers < 0:
        raise UsageError(
            f"num_workers must be 0 or more, got {config.num_workers}", param="num_workers"
        )
    if config.push_to:  # refused now, not after hours of training
        check_push_target(config.push_to)


def _check_architecture(config: TrainConfig) -> None:
    changes = (config.patch_size, config.embed_dim, config.depth)
    if not config.from_scratch and any(v is not None for v in changes):
        raise UsageError(
            "patch_size/embed_dim/depth change the architecture: add from_scratch",
            param=("from_scratch", "patch_size", "embed_dim", "depth"),
        )
    for name in ("embed_dim", "depth"):
        value = getattr(config, name)
        if not (value is None or isinstance(value, int) or _is_int_list(value)):
            raise UsageError(
                f"{name} must be an int or a list of ints (one per stage), got {value!r}",
                param=name,
            )


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) for v in value)


def _check_schedule(config: TrainConfig) -> None:
    at_least_one = {"epochs": config.epochs, "batch_size": config.batch_size,
                    "max_steps": config.max_steps, "log_every": config.log_every,
                    "shuffle_buffer": config.shuffle_buffer}  # fmt: skip
    for name, value in at_least_one.items():
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}", param=name)
    if not config.lr > 0:
        raise UsageError(f"lr must be positive, got {config.lr}", param="lr")
    if not config.weight_decay >= 0:
        raise UsageError(
            f"weight_decay must be 0 or more, got {config.weight_decay}", param="weight_decay"
        )
    if not 0 <= config.label_smoothing < 1:
        raise UsageError(
            f"label_smoothing must be in [0, 1), got {config.label_smoothing}",
            param="label_smoothing",
        )


def _check_augmentation(config: TrainConfig) -> None:
    if not 0 < config.crop_scale[0] <= config.crop_scale[1] <= 1:
        raise UsageError(
            f"crop_scale must satisfy 0 < min <= max <= 1, got {tuple(config.crop_scale)}",
            param="crop_scale",
        )


def _check_mixing(config: TrainConfig) -> None:
    for name in ("mixup", "cutmix"):
        alpha = getattr(config, name)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise UsageError(f"{name} must be >= 0 (0: off), got {alpha}", param=name)
    for name in ("mix_prob", "mix_switch_prob"):
        probability = getattr(config, name)
        if not 0 <= probability <= 1:
            raise UsageError(f"{name} must be in [0, 1], got {probability}", param=name)
