"""The starting model: MODEL's architecture with fresh weights, or its weights with a new head.

``from_scratch`` reads only MODEL's ``config.json`` (:func:`gfnet_cli.hub.resolve_config`;
a zoo name needs nothing downloaded) and may change the patch size, widths and depths.
Otherwise MODEL is loaded with its weights, resized to ``img_size`` the authors' way, and
given a classifier for the dataset's classes. Either way the dataset's class names go into
the config, so the trained MODEL folder predicts names, not indices.
"""

from __future__ import annotations

from typing import Any

from gfnet_cli.engine.train.config import TrainConfig
from gfnet_cli.hub import load_model, resolve_config
from gfnet_cli.models.gfnet import GFNet


def build_model(config: TrainConfig, class_names: list[str]) -> GFNet:
    """The starting point: fresh weights (``from_scratch``) or MODEL's with a new head."""
    changes = _run_changes(config)
    head = {"num_classes": len(class_names), "class_names": list(class_names)}
    if config.from_scratch:
        architecture = _architecture_changes(config)
        if architecture:
            changes["architecture"] = None  # no longer the named variant
        source = resolve_config(config.model)  # config.json only: no weights downloaded
        return GFNet(source.replace(**architecture, **changes, **head))
    pretrained = load_model(config.model, img_size=config.img_size)
    model = GFNet(pretrained.config.replace(**changes))
    model.load_state_dict(pretrained.state_dict())
    model.reset_classifier(len(class_names), list(class_names))
    return model


def _run_changes(config: TrainConfig) -> dict[str, Any]:
    """Config changes any run may make: resolution, drop-path rate, eval crop."""
    changes: dict[str, Any] = {}
    if config.img_size is not None:
        changes["img_size"] = config.img_size
    if config.drop_path is not None:
        changes["drop_path_rate"] = config.drop_path
    if config.crop_pct is not None:
        changes["crop_pct"] = config.crop_pct
    return changes


def _architecture_changes(config: TrainConfig) -> dict[str, Any]:
    """Shape changes only a run from scratch may make (checked by check_config)."""
    fields = {"patch_size": config.patch_size, "embed_dim": config.embed_dim,
              "depth": config.depth}  # fmt: skip
    return {name: value for name, value in fields.items() if value is not None}
