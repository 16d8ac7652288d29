"""Semantic segmentation: mask targets, cross-entropy ignoring 255, mIoU, classes by pixel share.

Targets are masks, ``(B, H, W)`` class indices; every row of a batch is labelled and pixels
labelled :data:`~gfnet_cli.data.masks.IGNORE_INDEX` (255) count for nothing. The metric is
mmsegmentation's ``IoUMetric`` and Hugging Face ``evaluate``'s ``mean_iou``: per class, the
intersection, union, predicted and labelled areas summed over the whole split, then
``mean_iou`` = nan-mean of intersection / union over the classes present (in the labels or the
predictions), ``mean_accuracy`` = nan-mean of intersection / labelled area, and
``overall_accuracy`` = correct pixels / labelled pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from gfnet_cli.data.masks import IGNORE_INDEX
from gfnet_cli.device import accumulator_dtype
from gfnet_cli.errors import UsageError
from gfnet_cli.tasks.base import Metric, MetricResult, Task

#: the areas the metric sums per class, in the order :meth:`SegmentationMetric.totals` holds them
AREAS = ("intersection", "union", "prediction", "label")


class MaskValueError(UsageError):
    """A mask value that is neither one of the model's classes nor the ignored 255."""


#: bytes of resized logits held at once: larger ones are resized in bands of rows
RESIZE_BAND_BYTES = 256 * 2**20


def resize_logits(outputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits ``(B, C, h, w)`` bilinearly resized to ``size`` (``align_corners=False``), as
    mmsegmentation resizes predictions to the original mask before scoring."""
    if tuple(outputs.shape[-2:]) == tuple(size):
        return outputs
    return F.interpolate(outputs, size=size, mode="bilinear", align_corners=False)


def resized_logit_bands(
    outputs: torch.Tensor, size: tuple[int, int], band_bytes: int = RESIZE_BAND_BYTES
) -> Iterator[tuple[slice, torch.Tensor]]:
    """:func:`resize_logits`, one band of whole rows at a time: ``(rows, logits of those rows)``.

    A 48-megapixel photograph's 150 class maps at full size take 29 GB; in bands the memory
    stays near ``band_bytes`` whatever the image. When the whole fits, one band that is
    exactly :func:`resize_logits`. Otherwise each band interpolates across its columns (the
    rows kept as they are), then between the two source rows of each output row: bilinear is
    separable, so the bands match the whole up to float rounding.
    """
    height, width = (int(side) for side in size)
    row_bytes = outputs.shape[0] * outputs.shape[1] * width * outputs.element_size()
    rows = max(1, band_bytes // (4 * max(row_bytes, 1)))  # the band and its temporaries
    if rows >= height:
        yield slice(0, height), resize_logits(outputs, (height, width))
        return
    source_height = outputs.shape[-2]
    # torch's source row for each output row (align_corners=False), in torch's own arithmetic,
    # and the weight of the row below
    opmath = torch.float64 if outputs.dtype == torch.float64 else torch.float32
    scale = torch.tensor(source_height, dtype=opmath) / height
    position = (scale * (torch.arange(height, dtype=opmath) + 0.5) - 0.5).clamp(min=0)
    above = position.floor().long().clamp(max=source_height - 1)
    below = (above + 1).clamp(max=source_height - 1)
    weight = (position - above).to(device=outputs.device, dtype=outputs.dtype)
    above_at, below_at = above.to(outputs.device), below.to(outputs.device)
    for start in range(0, height, rows):
        stop = min(start + rows, height)
        first, last = int(above[start]), int(below[stop - 1]) + 1
        across = F.interpolate(outputs[:, :, first:last], size=(last - first, width),
                               mode="bilinear", align_corners=False)  # fmt: skip
        # each output row mixes two source rows: one small matrix product for all classes
        mix = torch.zeros(stop - start, last - first, dtype=outputs.dtype, device=outputs.device)
        band_rows = torch.arange(stop - start, device=outputs.device)
        lower = weight[start:stop]
        mix.index_put_((band_rows, above_at[start:stop] - first), 1 - lower, accumulate=True)
        mix.index_put_((band_rows, below_at[start:stop] - first), lower, accumulate=True)
        yield slice(start, stop), torch.matmul(mix, across)


def resized_argmax(
    outputs: torch.Tensor, size: tuple[int, int], dtype: torch.dtype = torch.long
) -> torch.Tensor:
    """The class of every pixel at ``size``, ``(B, H, W)`` of ``dtype``, from logits at any
    size, without holding the full-size logits (:func:`resized_logit_bands`)."""
    classes = torch.empty((outputs.shape[0], *size), dtype=dtype, device=outputs.device)
    for rows, logits in resized_logit_bands(outputs, size):
        classes[:, rows] = logits.argmax(dim=1)
    return classes


class SegmentationMetric(Metric):
    """Per class: intersection, union, predicted and labelled pixels; plus the images and the
    cross-entropy summed over labelled pixels. Outputs at another size than the masks are
    resized to them first."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self._areas: torch.Tensor | None = None  # (4, classes), in AREAS order
        self._loss_sum: torch.Tensor | None = None
        self._images: torch.Tensor | None = None

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self._areas is None:
            device = outputs.device
            self._areas = torch.zeros(4, self.num_classes, dtype=torch.long, device=device)
            self._loss_sum = torch.zeros((), dtype=accumulator_dtype(device), device=device)
            self._images = torch.zeros((), dtype=torch.long, device=device)
        assert self._loss_sum is not None and self._images is not None
        self._images += len(targets)
        for rows, logits in resized_logit_bands(outputs, tuple(targets.shape[-2:])):
            self._update_areas(logits, targets[:, rows])

    def _update_areas(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        assert self._areas is not None and self._loss_sum is not None
        self._loss_sum += F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX,
                                          reduction="sum")  # fmt: skip
        labelled = targets != IGNORE_INDEX
        label = targets[labelled]
        prediction = logits.argmax(dim=1)[labelled]
        hit = prediction[prediction == label]
        classes = self.num_classes
        self._areas[0] += torch.bincount(hit, minlength=classes)[:classes]
        self._areas[2] += torch.bincount(prediction, minlength=classes)[:classes]
        self._areas[3] += torch.bincount(label, minlength=classes)[:classes]

    def totals(self) -> torch.Tensor:
        if self._areas is None or self._loss_sum is None or self._images is None:
            return torch.zeros(2 + 4 * self.num_classes, dtype=torch.float64)
        areas = self._areas.clone()
        areas[1] = areas[2] + areas[3] - areas[0]  # union
        head = torch.stack([self._images.double(), self._loss_sum.double()])
        return torch.cat([head, areas.double().flatten()]).cpu()

    def summarize(self, totals: torch.Tensor, class_names: list[str] | None) -> MetricResult:
        count = int(totals[0])
        areas = totals[2:].reshape(4, self.num_classes)
        intersection, union, prediction, label = (row.tolist() for row in areas)
        iou = [_ratio(i, u) for i, u in zip(intersection, union, strict=True)]
        accuracy = [_ratio(i, n) for i, n in zip(intersection, label, strict=True)]
        values = {
            "mean_iou": _nan_mean(iou),
            "mean_accuracy": _nan_mean(accuracy),
            "overall_accuracy": _ratio(sum(intersection), sum(label)),
            "loss": float(totals[1]) / max(sum(label), 1),  # per labelled pixel
        }
        values = {key: 0.0 if math.isnan(value) else value for key, value in values.items()}
        per_class = [
            {
                "index": index,
                "label": class_names[index] if class_names else str(index),
                "iou": iou[index],
                "accuracy": None if math.isnan(accuracy[index]) else accuracy[index],
                "label_pixels": int(label[index]),
                "predicted_pixels": int(prediction[index]),
            }
            for index in range(self.num_classes)
            if union[index] > 0
        ]
        return MetricResult(count, values, "mean_iou", per_class)


def per_category_iou(result: MetricResult, num_classes: int) -> list[float | None]:
    """Every class's IoU in class order, ``None`` where the class is in neither the labels
    nor the predictions (``evaluate``'s NaN, which JSON cannot hold)."""
    ious: list[float | None] = [None] * num_classes
    for row in result.per_class:
        ious[row["index"]] = row["iou"]
    return ious


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _nan_mean(values: list[float]) -> float:
    present = [value for value in values if not math.isnan(value)]
    return sum(present) / len(present) if present else math.nan


def pixel_shares(
    mask: torch.Tensor, class_names: list[str], top_k: int | None = None
) -> list[dict[str, Any]]:
    """The classes of one predicted ``(H, W)`` mask by share of its pixels, largest first."""
    counts = torch.bincount(mask.flatten().long(), minlength=len(class_names)).tolist()
    total = max(1, mask.numel())
    order = sorted((i for i, c in enumerate(counts) if c), key=lambda i: (-counts[i], i))
    return [
        {
            "index": index,
            "label": class_names[index] if index < len(class_names) else str(index),
            "share": counts[index] / total,
        }
        for index in order[:top_k]
    ]


class Segmentation(Task):
    name = "segmentation"
    pipeline_tag = "image-segmentation"
    primary_metric = "mean_iou"

    def metric(self, num_classes: int) -> SegmentationMetric:
        return SegmentationMetric(num_classes)

    def labelled_rows(self, targets: torch.Tensor) -> torch.Tensor:
        # every mask is a label; its unlabelled pixels are 255 inside it
        return torch.ones(len(targets), dtype=torch.bool)

    def check_targets(self, targets: torch.Tensor, num_classes: int, where: str,
                      samples: torch.Tensor | None = None) -> None:  # fmt: skip
        if not targets.numel():
            return  # a batch whose every sample was skipped (unreadable, mismatched)
        if targets.ndim != 3:
            raise UsageError(
                f"{where}: segmentation targets are (batch, height, width) masks, got shape "
                f"{tuple(targets.shape)}: is this a classification dataset?"
            )
        bad = ((targets >= num_classes) & (targets != IGNORE_INDEX)) | (targets < 0)
        if bool(bad.any()):
            row = int(bad.flatten(1).any(dim=1).nonzero()[0])
            value = int(targets[row][bad[row]][0])
            sample = f"row {row} of a batch" if samples is None else f"sample {int(samples[row])}"
            raise MaskValueError(
                f"{where}: mask value {value} ({sample}) is not a class: the model "
                f"has {num_classes} classes (0 to {num_classes - 1}) and 255 marks ignored "
                "pixels; ADE20K-style masks (0 = other, 1..N classes) need reduce_labels"
            )

    def loss(
        self, outputs: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        if targets.is_floating_point():
            raise UsageError("segmentation takes class-index masks, not mixed (mixup) targets")
        logits = resize_logits(outputs.float(), tuple(targets.shape[-2:]))
        return F.cross_entropy(
            logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing
        )

    def describe(
        self, outputs: torch.Tensor, class_names: list[str], top_k: int
    ) -> list[list[dict[str, Any]]]:
        masks = outputs.argmax(dim=1).cpu()
        return [pixel_shares(mask, class_names, top_k) for mask in masks]


SEGMENTATION = Segmentation()
