"""Building architectures: a zoo name or a config, with fields overridden.

Weights are not this package's business: :func:`gfnet_cli.hub.resolve.load_model` and
``gfnet_cli.create_model(..., pretrained=True)`` fetch them and build on these functions.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gfnet_cli.errors import UsageError
from gfnet_cli.models.config import TASKS, GFNetConfig
from gfnet_cli.models.features import Indices
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.models.segmentation import GFNetForSegmentation, segmentation_config
from gfnet_cli.models.zoo import get_zoo_entry


def model_config(
    name_or_config: str | GFNetConfig,
    *,
    img_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    task: str | None = None,
    **overrides: Any,
) -> GFNetConfig:
    """The config ``gfnet_cli.create_model`` builds: a zoo variant's or ``name_or_config``, changed.

    A new ``num_classes`` drops the variant's class names unless ``class_names`` are given.
    ``task="segmentation"`` turns a classification config into a Semantic FPN model's (PVT's
    head settings; the 512-pixel training crop unless ``img_size`` says otherwise).
    """
    if isinstance(name_or_config, GFNetConfig):
        config = name_or_config
    else:
        config = get_zoo_entry(name_or_config).config()
    check_task(task)
    if task == "classification" and config.is_segmentation:
        raise UsageError(
            f"{config.architecture or 'this model'} is a segmentation model: build a "
            "classifier from its architecture name instead",
            param="task",
        )
    if task == "segmentation" and not config.is_segmentation:
        config = segmentation_config(config, img_size=img_size)
    changes: dict[str, Any] = dict(overrides)
    if img_size is not None:
        changes["img_size"] = img_size if isinstance(img_size, int) else list(img_size)
    if num_classes is not None:
        changes["num_classes"] = num_classes
        if num_classes != config.num_classes and class_names is None:
            changes["class_names"] = None
    if class_names is not None:
        changes["class_names"] = list(class_names)
    return config.replace(**changes) if changes else config


def build_model(config: GFNetConfig) -> GFNetArchitecture | GFNetForSegmentation:
    """The architecture ``config`` describes, for its task (fresh weights; meta-device safe)."""
    return GFNetForSegmentation(config) if config.is_segmentation else GFNetArchitecture(config)


def architecture_class(config: GFNetConfig) -> type[nn.Module]:
    """The class :func:`build_model` instantiates for ``config``."""
    return GFNetForSegmentation if config.is_segmentation else GFNetArchitecture


def check_task(task: str | None) -> None:
    if task is not None and task not in TASKS:
        raise UsageError(f"task must be {' or '.join(TASKS)}, got {task!r}", param="task")


def check_segmentation_arguments(
    features_only: bool, out_indices: Indices, global_pool: str
) -> None:
    """Refuse classification-only arguments for a segmentation model."""
    if features_only or out_indices is not None:
        raise UsageError(
            "features_only and out_indices choose a classifier's feature maps; a segmentation "
            "model's backbone is model.backbone",
            param=("features_only", "task"),
        )
    if global_pool != "avg":
        raise UsageError(
            "global_pool is a classifier's pooling; a segmentation model does not pool",
            param=("global_pool", "task"),
        )
