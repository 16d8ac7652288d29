"""The training recipe: :class:`TrainConfig`, the authors' named recipes, and every check.

Every value a run takes is a field of :class:`TrainConfig` (defaults: our recipe in
docs/training.md, measured on small data). :data:`RECIPES` holds the authors' three recipes
(``imagenet``, ``finetune-384``, ``transfer``) as TrainConfig values;
:meth:`TrainConfig.from_recipe` starts from one and applies the values a caller gives
explicitly, which always win. :func:`check_config` refuses what would make a run useless
before any data is read, so a bad value costs a second, not hours. :func:`describe_run` is
the fully resolved run (``finetune --print-config``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gfnet_cli.data.augment import DEFAULT_CROP_SCALE
from gfnet_cli.data.randaugment import RandAugmentSpec, RandAugmentSpecError
from gfnet_cli.data.streaming import DEFAULT_SHUFFLE_BUFFER
from gfnet_cli.device import check_precision, resolve_device
from gfnet_cli.engine.distributed import world_size_from_env
from gfnet_cli.errors import UsageError, check_range
from gfnet_cli.hub.push import check_push_target
from gfnet_cli.hub.resolve import resolve_config
from gfnet_cli.models.config import LIMITS
from gfnet_cli.models.layers import FILTER_FORMS

#: classification's augmentation settings, which segmentation's paired pipeline replaces:
#: left out of a segmentation run's recipe (its card, ``--print-config``)
CLASSIFICATION_AUGMENTATION = ("crop_scale", "randaugment", "color_jitter", "reprob", "mixup",
                               "cutmix", "mix_prob", "mix_switch_prob")  # fmt: skip
_HYPERPARAMETERS = (
    "recipe", "epochs", "batch_size", "accumulate", "lr", "lr_base_batch", "min_lr",
    "warmup_lr", "weight_decay", "decay_all", "warmup_epochs", "label_smoothing", "drop_path",
    "eval_mode", "clip_grad", "augment", "crop_scale", "hflip", "randaugment", "color_jitter",
    "reprob", "mixup", "cutmix", "mix_prob", "mix_switch_prob", "ema", "seed", "precision",
    "img_size", "from_scratch", "new_head", "streaming", "compile", "grad_checkpointing",
    "deterministic", "validation_split_percentage", "task", "lr_schedule", "poly_power",
    "reduce_labels", "resize_scale", "filter_form",
)  # fmt: skip

LR_SCHEDULES = ("cosine", "poly")

# Minutes the other processes wait for rank 0 to load and prepare the data (docs/training.md):
# ImageNet's first load as an image folder takes far longer than NCCL's 10-minute default.
DEFAULT_PREPARE_TIMEOUT = 60.0

# The authors' optimizer (timm's create_optimizer for "adamw"): betas and eps are AdamW's
# defaults, written out so --print-config shows them.
OPTIMIZER = {"optimizer": "adamw", "opt_eps": 1e-8, "opt_betas": [0.9, 0.999]}


@dataclass
class TrainConfig:
    """Everything ``gfnet finetune`` accepts; defaults are the recipe in docs/training.md."""

    model: str
    dataset: str
    output_dir: Path
    recipe: str | None = None
    from_scratch: bool = False
    new_head: bool = False
    patch_size: int | None = None
    embed_dim: int | list[int] | None = None
    depth: int | list[int] | None = None
    img_size: int | None = None
    crop_pct: float | None = None
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    accumulate: int = 1
    lr: float = 1e-4
    lr_base_batch: int | None = None  # lr is scaled by global batch / this (None: not scaled)
    min_lr: float = 1e-6
    warmup_lr: float = 0.0
    weight_decay: float = 1e-4
    decay_all: bool = False
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    drop_path: float | None = None
    eval_mode: bool = False  # hold the model in eval mode while training (no drop-path/dropout)
    clip_grad: float = 1.0
    augment: bool = True
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE
    hflip: float = 0.5
    randaugment: str | None = None
    color_jitter: float = 0.0
    reprob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    ema: float | None = None
    seed: int = 0
    precision: str = "fp32"
    device: str = "auto"
    compile: bool = False
    grad_checkpointing: bool = False
    # PyTorch's deterministic mode for the run (device.deterministic_algorithms): what a
    # bit-identical resume on a GPU needs; slower. The CPU is exact without it.
    deterministic: bool = False
    # the global filters' form in training: "auto" measures the faster per filter on the first
    # step (recorded in checkpoints so a resume rounds alike; "fft" under deterministic)
    filter_form: str = "auto"
    num_workers: int = 2
    checkpoint_every: int = 500
    resume: bool = False
    overwrite: bool = False
    push_to: str | None = None
    train_split: str | None = None
    eval_split: str | None = None  # the split that chooses the best epoch (validation)
    test_split: str | None = None  # reported at the end, on the chosen weights only
    # % of the training split held out (seeded, stratified) to choose the best epoch when
    # DATASET has no validation split; 0: none (the last epoch is kept)
    validation_split_percentage: float = 10.0
    dataset_config: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    log_every: int = 10
    streaming: bool = False
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    prepare_timeout: float = DEFAULT_PREPARE_TIMEOUT  # minutes the others wait for rank 0's data
    # after warmup: "cosine" to min_lr, or "poly": (1 - progress) ** poly_power (mmsegmentation)
    lr_schedule: str = "cosine"
    poly_power: float = 0.9
    # segmentation (docs/segmentation.md): masks instead of labels
    task: str = "classification"
    mask_column: str | None = None
    reduce_labels: bool = False  # mask 0 ignored, 1..N -> 0..N-1 (ADE20K); recorded in the MODEL
    labels: str | None = None  # class names: a file (JSON id -> name, or one per line) or "ade20k"
    num_classes: int | None = None  # without names: class_0 .. class_{N-1}
    # random resize's base (long side, short side), times 0.5-2.0 (None: the crop's size)
    resize_scale: tuple[int, int] | None = None

    @classmethod
    def from_recipe(cls, recipe: str | None, **values: Any) -> TrainConfig:
        """``recipe``'s values (:data:`RECIPES`; None: our defaults), then ``values``.

        Pass only what the user chose explicitly: every value given here wins over the
        recipe's. ``model``, ``dataset`` and ``output_dir`` are required.
        """
        if recipe is None:
            base = SEGMENTATION_DEFAULTS if values.get("task") == "segmentation" else {}
            return cls(**{**base, **values})
        _check_recipe_name(recipe)
        return cls(**{**RECIPES[recipe], "recipe": recipe, **values})

    def global_batch_size(self, world_size: int) -> int:
        """Images per optimizer step over every process: batch x processes x accumulate."""
        return self.batch_size * world_size * self.accumulate

    def scaled_lr(self, world_size: int) -> float:
        """The peak learning rate used: ``lr x global batch / lr_base_batch`` (the authors'
        linear scaling rule), or ``lr`` itself without ``lr_base_batch``."""
        if not self.lr_base_batch:
            return self.lr
        return self.lr * self.global_batch_size(world_size) / self.lr_base_batch

    def hyperparameters(self, world_size: int = 1) -> dict[str, Any]:
        """The recipe as plain values, for the model card and train_results.json."""
        values = {k: getattr(self, k) for k in _HYPERPARAMETERS}
        values["crop_scale"] = list(self.crop_scale)
        if self.task == "segmentation":  # settings its paired augmentation never reads
            for name in CLASSIFICATION_AUGMENTATION:
                del values[name]
        if self.resize_scale is not None:
            values["resize_scale"] = list(self.resize_scale)
        values["base_lr"] = self.lr
        values["lr"] = self.scaled_lr(world_size)
        values["global_batch_size"] = self.global_batch_size(world_size)
        if self.streaming:
            values["shuffle_buffer"] = self.shuffle_buffer
        return values


# ====================================================================== the authors' recipes
# What every one of the authors' scripts shares (main_gfnet.py's defaults, DeiT's): timm's
# RandAugment and colour jitter, the ImageNet crop, mixup + cutmix, smoothing, no random
# erasing, gradient clipping, warmup from 1e-6, lr scaled linearly with the global batch.
_AUTHORS_COMMON: dict[str, Any] = {
    "warmup_epochs": 5.0, "warmup_lr": 1e-6, "lr_base_batch": 512, "clip_grad": 1.0,
    "label_smoothing": 0.1, "augment": True, "crop_scale": (0.08, 1.0), "hflip": 0.5,
    "randaugment": "rand-m9-mstd0.5-inc1", "color_jitter": 0.4, "reprob": 0.0,
    "mixup": 0.8, "cutmix": 1.0, "mix_prob": 1.0, "mix_switch_prob": 0.5, "decay_all": False,
}  # fmt: skip

RECIPES: dict[str, dict[str, Any]] = {
    # main_gfnet.py from scratch, 8 GPUs x 128: drop path is the variant's (MODEL's config)
    "imagenet": {**_AUTHORS_COMMON, "epochs": 300, "lr": 5e-4, "min_lr": 1e-5,
                 "weight_decay": 0.05, "batch_size": 128, "img_size": 224, "drop_path": None,
                 "eval_mode": False},  # fmt: skip
    # main_gfnet.py --finetune at --input-size 384, 8 GPUs x 64; the model stays in eval mode
    "finetune-384": {**_AUTHORS_COMMON, "epochs": 30, "lr": 5e-6, "min_lr": 5e-6,
                     "weight_decay": 1e-8, "batch_size": 64, "img_size": 384,
                     "drop_path": 0.0, "eval_mode": True},  # fmt: skip
    # main_gfnet_transfer.py (CIFAR, Cars, Flowers: images upscaled to 224), 8 GPUs x 64
    "transfer": {**_AUTHORS_COMMON, "epochs": 1000, "lr": 1e-4, "min_lr": 1e-5,
                 "weight_decay": 1e-4, "batch_size": 64, "img_size": 224, "drop_path": 0.0,
                 "eval_mode": True},  # fmt: skip
}

# Semantic segmentation without a recipe: no label smoothing and none of classification's
# augmentations (the paired pipeline of gfnet_cli.data.segmentation replaces them).
SEGMENTATION_DEFAULTS: dict[str, Any] = {"task": "segmentation", "label_smoothing": 0.0}

# PVT's Semantic FPN on ADE20K, which the GFNet authors followed for Table 2 (GFNet issue #1:
# "Semantic FPN, following PVT's configuration"; whai362/PVT segmentation/configs/sem_fpn and
# mmsegmentation's configs/_base_/datasets/ade20k.py): AdamW lr 1e-4 and weight decay 1e-4
# on every parameter, no gradient clipping, poly decay (power 0.9) to 0 per iteration, no
# warmup, 80k iterations of a global batch of 16 (8 GPUs x 2), 512x512 crops of images
# resized to (2048, 512) x 0.5-2.0, ADE20K's 0 ignored (reduce_zero_label).
RECIPES["ade20k"] = {
    **SEGMENTATION_DEFAULTS, "epochs": 10_000, "max_steps": 80_000, "batch_size": 2,
    "lr": 1e-4, "lr_base_batch": 16, "min_lr": 0.0, "warmup_lr": 0.0, "warmup_epochs": 0.0,
    "weight_decay": 1e-4, "decay_all": True, "clip_grad": 0.0, "lr_schedule": "poly",
    "poly_power": 0.9, "img_size": 512, "resize_scale": (2048, 512), "reduce_labels": True,
    "augment": True, "hflip": 0.5, "randaugment": None, "color_jitter": 0.0, "reprob": 0.0,
    "mixup": 0.0, "cutmix": 0.0, "drop_path": None, "eval_mode": False,
}  # fmt: skip

# Whether a recipe trains from scratch (True) or from MODEL's weights (False), and why.
RECIPE_START: dict[str, tuple[bool, str]] = {
    "ade20k": (False, "fine-tunes MODEL's ImageNet weights under a new Semantic FPN head"),
    "imagenet": (True, "trains from scratch (the authors' main_gfnet.py without --finetune)"),
    "finetune-384": (False, "fine-tunes MODEL's trained weights at 384 px"),
    "transfer": (False, "fine-tunes MODEL's ImageNet weights on another dataset"),
}


# ====================================================================== checks
def training_filter_form(config: TrainConfig) -> str:
    """The form the global filters train in: ``filter_form``, but the FFT form for ``auto``
    under ``deterministic`` (a timing is not reproducible)."""
    if config.filter_form not in FILTER_FORMS:
        raise UsageError(f"filter_form must be one of {', '.join(FILTER_FORMS)}, got "
                         f"{config.filter_form!r}", param="filter_form")  # fmt: skip
    return "fft" if config.deterministic and config.filter_form == "auto" else config.filter_form


def check_config(config: TrainConfig, device: torch.device) -> None:
    """Refuse a recipe that cannot run on ``device``, before any data is read.

    Raises :class:`UsageError` naming the parameter (``error.param``).
    """
    check_precision(device, config.precision)  # fp16 needs a GPU, bf16 a GPU that has it
    _check_recipe(config)
    _check_architecture(config)
    _check_schedule(config)
    _check_optimizer(config)
    _check_augmentation(config)
    _check_mixing(config)
    _check_task(config)
    training_filter_form(config)
    if config.num_workers < 0:
        raise UsageError(
            f"num_workers must be 0 or more, got {config.num_workers}", param="num_workers"
        )
    if not (math.isfinite(config.prepare_timeout) and config.prepare_timeout > 0):
        raise UsageError(
            f"prepare_timeout must be a positive number of minutes, got {config.prepare_timeout}",
            param="prepare_timeout",
        )
    if not 0 <= config.validation_split_percentage < 100:
        raise UsageError(
            "validation_split_percentage must be in [0, 100), got "
            f"{config.validation_split_percentage}",
            param="validation_split_percentage",
        )
    _check_ranges(config)
    if config.resume and config.overwrite:
        raise UsageError(
            "resume continues the run in output_dir and overwrite deletes it: pass one of them",
            param=("resume", "overwrite"),
        )
    if config.push_to:  # refused now, not after hours of training
        check_push_target(config.push_to)


# Every numeric value's range, (minimum, maximum, minimum excluded, maximum excluded); the
# checks above give some of them a more specific message first. None: unbounded.
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "epochs": (1, None, False, False),
    "max_steps": (1, None, False, False),
    "batch_size": (1, None, False, False),
    "accumulate": (1, None, False, False),
    "lr_base_batch": (1, None, False, False),
    "log_every": (1, None, False, False),
    "shuffle_buffer": (1, None, False, False),
    "checkpoint_every": (0, None, False, False),  # 0: at the end of each epoch only
    "num_workers": (0, None, False, False),
    "seed": (0, 2**63 - 1, False, False),
    "lr": (0, None, True, False),
    "min_lr": (0, None, False, False),
    "warmup_lr": (0, None, False, False),
    "weight_decay": (0, None, False, False),
    "warmup_epochs": (0, None, False, False),
    "clip_grad": (0, None, False, False),  # 0: off
    "label_smoothing": (0, 1, False, True),
    "drop_path": (0, 1, False, True),
    "hflip": (0, 1, False, False),
    "reprob": (0, 1, False, False),
    "color_jitter": (0, None, False, False),
    "mixup": (0, None, False, False),
    "cutmix": (0, None, False, False),
    "mix_prob": (0, 1, False, False),
    "mix_switch_prob": (0, 1, False, False),
    "ema": (0, 1, True, True),
    "crop_pct": (0, 1, True, False),
    "prepare_timeout": (0, None, True, False),
    "poly_power": (0, None, True, False),
    "patch_size": (*LIMITS["patch_size"], False, False),
    "img_size": (*LIMITS["img_size"], False, False),
    "num_classes": (2, LIMITS["num_classes"][1], False, False),
}


def _check_ranges(config: TrainConfig) -> None:
    """Every number in its range and finite (``lr inf`` no longer starts training)."""
    for name, (low, high, above, below) in _RANGES.items():
        check_range(name, getattr(config, name), low, high, above=above, below=below)
    for name in ("embed_dim", "depth"):
        values = getattr(config, name)
        for value in values if isinstance(values, list) else [values]:
            check_range(name, value, *LIMITS[name])


def _check_recipe(config: TrainConfig) -> None:
    if config.recipe is None:
        return
    _check_recipe_name(config.recipe)
    scratch, what = RECIPE_START[config.recipe]
    if config.from_scratch != scratch:
        fix = "add from_scratch" if scratch else "drop from_scratch (or use recipe imagenet)"
        raise UsageError(
            f"recipe {config.recipe} {what}: {fix}", param=("recipe", "from_scratch")
        )


def _check_recipe_name(recipe: str) -> None:
    if recipe not in RECIPES:
        raise UsageError(
            f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}", param="recipe"
        )


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
    if config.eval_mode and config.drop_path:
        origin = f", set by recipe {config.recipe}" if config.recipe else ""
        raise UsageError(
            f"drop_path {config.drop_path} has no effect while the model is held in eval mode "
            f"(eval_mode{origin}): turn eval_mode off to train with drop path",
            param=("drop_path", "eval_mode", "recipe"),
        )


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) for v in value)


def _check_schedule(config: TrainConfig) -> None:
    at_least_one = {"epochs": config.epochs, "batch_size": config.batch_size,
                    "max_steps": config.max_steps, "log_every": config.log_every,
                    "shuffle_buffer": config.shuffle_buffer, "accumulate": config.accumulate,
                    "lr_base_batch": config.lr_base_batch}  # fmt: skip
    for name, value in at_least_one.items():
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}", param=name)
    if not config.lr > 0:
        raise UsageError(f"lr must be positive, got {config.lr}", param="lr")
    if not config.warmup_lr >= 0:
        raise UsageError(f"warmup_lr must be 0 or more, got {config.warmup_lr}", param="warmup_lr")
    if not 0 <= config.label_smoothing < 1:
        raise UsageError(
            f"label_smoothing must be in [0, 1), got {config.label_smoothing}",
            param="label_smoothing",
        )


def _check_optimizer(config: TrainConfig) -> None:
    if not config.weight_decay >= 0:
        raise UsageError(
            f"weight_decay must be 0 or more, got {config.weight_decay}", param="weight_decay"
        )
    if config.ema is not None and not 0 < config.ema < 1:
        raise UsageError(
            f"ema must be a decay in (0, 1), e.g. 0.9998; got {config.ema}", param="ema"
        )


def _check_augmentation(config: TrainConfig) -> None:
    if not 0 < config.crop_scale[0] <= config.crop_scale[1] <= 1:
        raise UsageError(
            f"crop_scale must satisfy 0 < min <= max <= 1, got {tuple(config.crop_scale)}",
            param="crop_scale",
        )
    if not (math.isfinite(config.color_jitter) and config.color_jitter >= 0):
        raise UsageError(
            f"color_jitter must be >= 0 (0: off), got {config.color_jitter}", param="color_jitter"
        )
    if not 0 <= config.reprob <= 1:
        raise UsageError(f"reprob must be in [0, 1], got {config.reprob}", param="reprob")
    if config.randaugment:
        try:
            RandAugmentSpec.parse(config.randaugment)
        except RandAugmentSpecError as exc:
            raise UsageError(str(exc).replace("RandAugment spec", "randaugment"),
                             param="randaugment") from None  # fmt: skip


def _check_task(config: TrainConfig) -> None:
    """Segmentation's settings need task segmentation; classification-only ones refused."""
    if config.task not in ("classification", "segmentation"):
        raise UsageError(f"task must be classification or segmentation, got {config.task!r}",
                         param="task")  # fmt: skip
    if config.lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got "
                         f"{config.lr_schedule!r}", param="lr_schedule")  # fmt: skip
    if config.num_classes is not None and config.num_classes < 2:
        raise UsageError(f"num_classes must be at least 2, got {config.num_classes}",
                         param="num_classes")  # fmt: skip
    segmentation_only = {"mask_column": config.mask_column, "labels": config.labels,
                         "num_classes": config.num_classes,
                         "resize_scale": config.resize_scale,
                         "reduce_labels": config.reduce_labels or None}  # fmt: skip
    if config.task == "classification":
        given = [name for name, value in segmentation_only.items() if value is not None]
        if given:
            raise UsageError(f"{given[0]} is a segmentation setting: add task segmentation",
                             param=(given[0], "task"))  # fmt: skip
        return
    classification_only = {"mixup": config.mixup, "cutmix": config.cutmix,
                           "randaugment": config.randaugment, "reprob": config.reprob,
                           "label_column": config.label_column}  # fmt: skip
    given = [name for name, value in classification_only.items() if value]
    if given:
        raise UsageError(f"{given[0]} is a classification setting: segmentation masks take "
                         "their own paired augmentation", param=(given[0], "task"))  # fmt: skip
    if config.resize_scale is not None and min(config.resize_scale) < 1:
        raise UsageError(f"resize_scale must be two positive sizes, got {config.resize_scale}",
                         param="resize_scale")  # fmt: skip


def _check_mixing(config: TrainConfig) -> None:
    for name in ("mixup", "cutmix"):
        alpha = getattr(config, name)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise UsageError(f"{name} must be >= 0 (0: off), got {alpha}", param=name)
    for name in ("mix_prob", "mix_switch_prob"):
        probability = getattr(config, name)
        if not 0 <= probability <= 1:
            raise UsageError(f"{name} must be in [0, 1], got {probability}", param=name)


# ====================================================================== the resolved run
def describe_run(config: TrainConfig, world_size: int | None = None) -> dict[str, Any]:
    """The run ``config`` describes, fully resolved, as one JSON-able dict (``--print-config``).

    Checks the config as a run would, reads MODEL's ``config.json`` (a zoo name needs
    nothing; a Hub repository only that file) for the resolution and drop-path rate, and
    takes the number of processes from ``torchrun``'s environment. Touches no data.
    """
    world_size = world_size or world_size_from_env()
    device = resolve_device(config.device)
    check_config(config, device)
    model_config = resolve_config(config.model)
    drop_path = config.drop_path if config.drop_path is not None else model_config.drop_path_rate
    img_size = config.img_size if config.img_size is not None else model_config.img_size
    described = {
        "model": config.model,
        "dataset": config.dataset,
        "output_dir": str(config.output_dir),
        **config.hyperparameters(world_size),
        **OPTIMIZER,
        "schedule": (f"poly (power {config.poly_power}) to min_lr, per step"
                     if config.lr_schedule == "poly" else "warmup then cosine, per step"),
        "drop_path": drop_path,
        "img_size": (img_size if config.img_size is not None or model_config.is_segmentation
                     or config.task != "segmentation" else 512),
        # segmentation resamples images bilinearly (mmsegmentation's pipeline)
        "interpolation": ("bilinear" if config.task == "segmentation"
                          else model_config.interpolation),
        "max_steps": config.max_steps,
        "num_workers": config.num_workers,
        "device": str(device),
        "world_size": world_size,
    }
    return {key: list(v) if isinstance(v, tuple) else v for key, v in described.items()}

