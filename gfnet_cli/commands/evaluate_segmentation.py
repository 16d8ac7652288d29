"""Evaluating a segmentation MODEL on a DATASET of images and masks: mIoU and images/s.

The model's task decides: :func:`gfnet_cli.commands.evaluate.evaluate` hands a segmentation
MODEL here. Scoring goes through the one loop (:func:`gfnet_cli.engine.scoring.score`) with
the segmentation task's metric (per-class intersection and union, on the device, read once).

Inference is whole-image by default, as PVT's Semantic FPN config evaluates: each image's
shorter side resized to the model's size (aspect kept), its logits resized to the original
mask. Images differ in size, so one image goes through the model at a time, as in
mmsegmentation's evaluation. ``slide=True`` runs mmsegmentation's sliding window instead
(512 crops every 341 pixels on the resized image).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gfnet_cli.data.datasets import DatasetError, collate_skipping_failures, spaced_subset
from gfnet_cli.data.segmentation import (
    SIZE_MISMATCH,
    SegmentationDataset,
    SegmentationEvalTransform,
    TorchIterableSegmentationDataset,
    TorchSegmentationDataset,
    load_segmentation_dataset,
    slide_logits,
)
from gfnet_cli.engine.inference import ProgressCallback, default_workers
from gfnet_cli.engine.scoring import Skips, score
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.serialization import save_json
from gfnet_cli.models.segmentation import GFNetForSegmentation
from gfnet_cli.tasks.segmentation import SEGMENTATION, per_category_iou

logger = logging.getLogger(__name__)

SLIDE_CROP, SLIDE_STRIDE = 512, 341  # mmsegmentation's slide test_cfg for 512 crops


class MaskSizeError(UsageError):
    """A mask whose size differs from its image, with ``strict``."""


class StrictSkips(Skips):
    """Skips that refuse a mask/image size mismatch instead of counting it (``strict``)."""

    def add(self, index: int, reason: str) -> None:
        if SIZE_MISMATCH in reason:
            raise MaskSizeError(f"sample {index}: {reason} (strict)", param="strict")
        super().add(index, reason)


@dataclass
class SegmentationEvaluationResult:
    """What ``evaluate`` measured on a segmentation MODEL; IoUs and accuracies are fractions."""

    model: str
    dataset: str
    split: str
    num_samples: int
    mean_iou: float
    mean_accuracy: float
    overall_accuracy: float
    per_category_iou: list[float | None]
    images_per_second: float
    loss: float = 0.0
    num_skipped: int = 0
    mode: str = "whole"
    img_size: int = 0
    reduce_labels: bool = False
    dataset_config: str | None = None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    precision: str = "fp32"
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The ``evaluate --json`` document for a segmentation MODEL."""
        keys = (
            "model", "dataset", "split", "num_samples", "mean_iou", "mean_accuracy",
            "overall_accuracy", "per_category_iou", "images_per_second", "num_skipped",
        )  # fmt: skip
        return {key: getattr(self, key) for key in keys}

    def to_dict(self) -> dict[str, Any]:
        return {"task": "image-segmentation", **asdict(self)}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON, as a classification result is written."""
        return save_json(self.to_dict(), path, overwrite=overwrite)


def evaluate_segmentation(
    net: GFNetForSegmentation,
    dataset: str | SegmentationDataset,
    *,
    model_label: str,
    split: str | None = None,
    dataset_config: str | None = None,
    max_samples: int | None = None,
    num_workers: int | None = None,
    device: torch.device,
    precision: str = "fp32",
    image_column: str | None = None,
    mask_column: str | None = None,
    streaming: bool = False,
    reduce_labels: bool | None = None,
    slide: bool = False,
    strict: bool = False,
    progress: ProgressCallback | None = None,
    img_size: int | None = None,
) -> SegmentationEvaluationResult:
    """Score a loaded segmentation model (see the module docstring).

    ``reduce_labels=None`` does what the model was trained with (its config records it);
    ``img_size`` the shorter side images are resized to (default: the model's training crop).
    """
    data = dataset if isinstance(dataset, SegmentationDataset) else load_segmentation_dataset(
        dataset, split, dataset_config=dataset_config, image_column=image_column,
        mask_column=mask_column, streaming=streaming,
    )  # fmt: skip
    config = net.config
    if reduce_labels is None:
        reduce_labels = bool(config.segmentation and config.segmentation.reduce_labels)
    size = img_size or min(config.image_size)
    transform = SegmentationEvalTransform(size, config.mean, config.std)
    loader, total = _loader(data, transform, reduce_labels, max_samples, num_workers, device)
    logger.info(
        "evaluating %s on %s (%s, %s images): %s inference, shorter side %d, %s %s",
        model_label, data.name, data.split, total if total is not None else "?",
        "slide" if slide else "whole-image", size, device, precision,
    )  # fmt: skip

    def forward(images: torch.Tensor) -> torch.Tensor:
        if slide:
            return slide_logits(net, images, net.num_classes, SLIDE_CROP, SLIDE_STRIDE)
        return net(images)

    metric = SEGMENTATION.metric(net.num_classes)
    skips = StrictSkips() if strict else Skips()
    start = time.perf_counter()
    score(forward, loader, SEGMENTATION, metric, num_classes=net.num_classes, device=device,
          precision=precision, where=f"{data.name} [{data.split}]", skips=skips,
          max_samples=max_samples, progress=progress, total=total)  # fmt: skip
    result = metric.summarize(metric.totals(), config.labels)  # the one device read
    elapsed = time.perf_counter() - start
    skips.require_scores(result.count, "unreadable or mismatched")
    return SegmentationEvaluationResult(
        model=model_label,
        dataset=data.name,
        split=data.split,
        num_samples=result.count,
        mean_iou=result.values["mean_iou"],
        mean_accuracy=result.values["mean_accuracy"],
        overall_accuracy=result.values["overall_accuracy"],
        per_category_iou=per_category_iou(result, net.num_classes),
        images_per_second=result.count / elapsed if elapsed > 0 else 0.0,
        loss=result.values["loss"],
        num_skipped=skips.count,
        mode="slide" if slide else "whole",
        img_size=size,
        reduce_labels=reduce_labels,
        dataset_config=dataset_config,
        per_class=result.per_class,
        skipped=skips.reported,
        device=str(device),
        precision=precision,
        elapsed_s=elapsed,
    )


def _loader(
    data: SegmentationDataset,
    transform: SegmentationEvalTransform,
    reduce_labels: bool,
    max_samples: int | None,
    num_workers: int | None,
    device: torch.device,
) -> tuple[torch.utils.data.DataLoader, int | None]:
    """One image per batch: whole images differ in size (and so do their masks)."""
    workers = default_workers(num_workers)
    if data.streaming:
        torch_data: Any = TorchIterableSegmentationDataset(
            data, transform, reduce=reduce_labels, max_samples=max_samples
        )
        workers = min(workers, torch_data.num_shards)
        total = max_samples
    else:
        if len(data) == 0:
            raise DatasetError(f"{data.name} ({data.split}) holds no samples")
        torch_data = spaced_subset(
            TorchSegmentationDataset(data, transform, reduce=reduce_labels), max_samples
        )
        total = len(torch_data)
    loader = torch.utils.data.DataLoader(
        torch_data, batch_size=1, shuffle=False, num_workers=workers,
        collate_fn=collate_skipping_failures, pin_memory=device.type == "cuda",
    )  # fmt: skip
    return loader, total
