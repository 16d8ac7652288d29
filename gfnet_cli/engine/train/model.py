"""The starting model: MODEL's architecture with fresh weights, or its weights and its head
when the dataset has MODEL's classes, or a new head.

``from_scratch`` reads only MODEL's ``config.json`` (:func:`gfnet_cli.hub.resolve.resolve_config`;
a zoo name needs nothing downloaded) and may change the patch size, widths and depths.
Otherwise MODEL is loaded with its weights, resized to ``img_size`` the authors' way. Its
trained classifier is kept when the dataset lists MODEL's classes in MODEL's order (by name,
or by ImageNet synset id for an ImageNet folder): fine-tuning an ImageNet model on ImageNet at
384 px, the authors' own use, must not throw its head away. ``new_head`` forces a fresh one.
Either way the config gets class names, so the trained MODEL folder predicts names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gfnet_cli.engine.train.config import TrainConfig
from gfnet_cli.hub.resolve import load_model, resolve_config
from gfnet_cli.labels import imagenet_class_names, imagenet_synsets, normalize_class_name
from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.gfnet import GFNetArchitecture


@dataclass
class StartingModel:
    """The model a run starts from and what became of MODEL's classifier."""

    model: GFNetArchitecture
    head: str  # "kept": MODEL's trained classifier; "new": a fresh one
    reason: str  # one line for the log

    def describe(self) -> str:
        return f"classifier {self.head}: {self.reason}"


def build_model(config: TrainConfig, class_names: list[str]) -> StartingModel:
    """The starting point: fresh weights (``from_scratch``) or MODEL's, with its head or a new
    one for ``class_names``."""
    if config.task == "segmentation":
        started = _segmentation_model(config, class_names)
        started.model.set_grad_checkpointing(config.grad_checkpointing)
        return started
    changes = _run_changes(config)
    head = {"num_classes": len(class_names), "class_names": list(class_names)}
    if config.from_scratch:
        architecture = _architecture_changes(config)
        if architecture:
            changes["architecture"] = None  # no longer the named variant
        source = resolve_config(config.model)  # config.json only: no weights downloaded
        model = GFNetArchitecture(source.replace(**architecture, **changes, **head))
        started = StartingModel(model, "new", "training from scratch")
    else:
        started = _pretrained(config, changes, class_names)
    started.model.set_grad_checkpointing(config.grad_checkpointing)
    return started


def _segmentation_model(config: TrainConfig, class_names: list[str]) -> StartingModel:
    """MODEL's backbone under a new Semantic FPN head at the training crop (default 512), or
    a segmentation MODEL as it is when it has these classes; ``reduce_labels`` recorded."""
    from gfnet_cli.hub.resolve import create_model

    head = {"num_classes": len(class_names), "class_names": list(class_names)}
    source = resolve_config(config.model)
    size = config.img_size if config.img_size is not None else (
        source.img_size if source.is_segmentation else 512)  # fmt: skip
    if config.from_scratch:
        architecture = _architecture_changes(config)
        if architecture:
            source = source.replace(architecture=None, **architecture)
        if config.drop_path is not None:
            source = source.replace(drop_path_rate=config.drop_path)
        model = create_model(source, task="segmentation", img_size=size, **head)
        started = StartingModel(model, "new", "training from scratch")
    else:
        kept = source.is_segmentation and same_classes(class_names, source)
        model = create_model(config.model, pretrained=True, task="segmentation", img_size=size,
                             **({} if kept else head))  # fmt: skip
        if kept and not config.new_head:
            started = StartingModel(model, "kept", "MODEL segments the dataset's classes")
        else:
            if kept:  # new_head
                model.reset_classifier(len(class_names), list(class_names))
            started = StartingModel(model, "new", "a new Semantic FPN head for the dataset's "
                                    f"{len(class_names)} classes")  # fmt: skip
    settings = started.model.config.segmentation
    started.model.config = started.model.config.replace(
        segmentation=replace(settings, reduce_labels=config.reduce_labels)
    )
    return started


def _pretrained(config: TrainConfig, changes: dict[str, Any], class_names: list[str]
                ) -> StartingModel:  # fmt: skip
    pretrained = load_model(config.model, img_size=config.img_size)
    model = GFNetArchitecture(pretrained.config.replace(**changes))
    model.load_state_dict(pretrained.state_dict())
    same = same_classes(class_names, pretrained.config)
    if same and not config.new_head:
        return StartingModel(model, "kept", f"the dataset's {len(class_names)} classes are "
                             "MODEL's, in MODEL's order (new_head replaces it)")  # fmt: skip
    model.reset_classifier(len(class_names), list(class_names))
    if config.new_head:
        reason = "new_head"
    else:
        reason = (f"the dataset's {len(class_names)} classes are not MODEL's "
                  f"{pretrained.num_classes}, in its order")  # fmt: skip
    return StartingModel(model, "new", reason)


def same_classes(class_names: list[str], model_config: GFNetConfig) -> bool:
    """Whether ``class_names`` are ``model_config``'s classes in the same order: equal names
    (case, ``_`` and ``-`` aside), or ImageNet's synset ids for an ImageNet model."""
    names = model_config.class_names
    if not names or len(names) != len(class_names) or model_config.num_classes != len(names):
        return False
    if [normalize_class_name(n) for n in class_names] == [normalize_class_name(n) for n in names]:
        return True
    return names == imagenet_class_names() and [n.lower() for n in class_names] == [
        s.lower() for s in imagenet_synsets()
    ]


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
