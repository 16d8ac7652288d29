"""Building architectures: a zoo name or a config, with fields overridden.

Weights are not this package's business: :func:`gfnet_cli.hub.resolve.load_model` and
``gfnet_cli.create_model(..., pretrained=True)`` fetch them and build on these functions.
"""

from __future__ import annotations

from typing import Any

from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.features import FeatureExtractor, Indices, features_only_model
from gfnet_cli.models.gfnet import GFNet
from gfnet_cli.models.zoo import get_zoo_entry


def model_config(
    name_or_config: str | GFNetConfig,
    *,
    img_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    **overrides: Any,
) -> GFNetConfig:
    """The config :func:`create_model` builds: a zoo variant's or ``name_or_config``, changed.

    A new ``num_classes`` drops the variant's class names unless ``class_names`` are given.
    """
    if isinstance(name_or_config, GFNetConfig):
        config = name_or_config
    else:
        config = get_zoo_entry(name_or_config).config()
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


def create_model(
    name_or_config: str | GFNetConfig,
    *,
    img_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    global_pool: str = "avg",
    features_only: bool = False,
    out_indices: Indices = None,
    **overrides: Any,
) -> GFNet | FeatureExtractor:
    """A GFNet with fresh weights: a zoo name (``"gfnet-xs"``) or a :class:`GFNetConfig`.

    Keyword arguments override config fields (e.g. ``drop_path_rate=0.1``, ``depth=6``).
    ``features_only=True`` returns the backbone (:class:`FeatureExtractor`): its forward
    gives the feature maps ``out_indices`` chooses (default: a pyramid model's four stages,
    a flat model's last three blocks), NCHW.
    """
    config = model_config(
        name_or_config,
        img_size=img_size,
        num_classes=num_classes,
        class_names=class_names,
        **overrides,
    )
    model = GFNet(config, global_pool=global_pool)
    return features_only_model(model, features_only, out_indices)
