"""The two ways to get a model: build an architecture, or load a MODEL with its weights."""

from __future__ import annotations

from typing import Any

import torch

from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.gfnet import GFNet
from gfnet_cli.models.zoo import get_zoo_entry


def create_model(
    name_or_config: str | GFNetConfig,
    *,
    pretrained: bool = False,
    img_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    **overrides: Any,
) -> GFNet:
    """Build a GFNet: a zoo name (``"gfnet-xs"``) or a :class:`GFNetConfig`.

    ``pretrained=True`` loads the variant's ImageNet weights (see :func:`load_model`); the
    head is then replaced when ``num_classes`` differs, and weights are resized when
    ``img_size`` differs. Other keyword arguments override config fields (e.g.
    ``drop_path_rate=0.1``, ``depth=6``).
    """
    if pretrained:
        if not isinstance(name_or_config, str):
            raise TypeError("pretrained=True needs a model name, not a config")
        model = load_model(name_or_config, img_size=img_size)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes, class_names)
        return model
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
    if changes:
        config = config.replace(**changes)
    return GFNet(config)


def load_model(
    model: str,
    *,
    revision: str | None = None,
    img_size: int | tuple[int, int] | None = None,
    device: str | torch.device | None = None,
) -> GFNet:
    """Load a MODEL (local folder, Hub repo ``org/name[@rev]`` or zoo name) in eval mode.

    With ``img_size``, the position embedding and filters are resized to it as the authors'
    fine-tuning does.
    """
    from gfnet_cli.hub import resolve_model
    from gfnet_cli.serialization import load_model_folder

    folder = resolve_model(str(model), revision=revision)
    return load_model_folder(folder, img_size=img_size, device=device)
