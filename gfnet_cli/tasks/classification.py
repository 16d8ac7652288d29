"""Image classification: class-index targets, cross-entropy, top-1/top-5, top-k predictions.

The worked example of the task seam (docs/architecture.md): every task-specific decision of
the loops is one method here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gfnet_cli.device import accumulator_dtype
from gfnet_cli.errors import UsageError
from gfnet_cli.tasks.base import Metric, MetricResult, Task


class LabelRangeError(UsageError):
    """A label that is not one of the model's classes."""


class ClassificationMetric(Metric):
    """Summed cross-entropy, and per class: samples, top-1 hits, top-5 hits."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.k = min(5, num_classes)
        self._loss_sum: torch.Tensor | None = None
        self._class_hits: torch.Tensor | None = None  # (3, classes): total, top-1, top-5

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self._class_hits is None:
            device = outputs.device
            self._loss_sum = torch.zeros((), dtype=accumulator_dtype(device), device=device)
            self._class_hits = torch.zeros(3, self.num_classes, dtype=torch.long, device=device)
        self._loss_sum += F.cross_entropy(outputs, targets, reduction="sum")
        top = outputs.topk(self.k, dim=-1).indices
        hits = torch.stack(
            [torch.ones_like(targets, dtype=torch.bool), top[:, 0] == targets,
             (top == targets[:, None]).any(dim=-1)]
        ).long()  # fmt: skip
        # scatter_add_ has a deterministic CUDA kernel (bincount with weights has none).
        self._class_hits.scatter_add_(1, targets.expand(3, -1), hits)

    def totals(self) -> torch.Tensor:
        if self._class_hits is None or self._loss_sum is None:
            return torch.zeros(1 + 3 * self.num_classes, dtype=torch.float64)
        loss = self._loss_sum.double().reshape(1)
        return torch.cat([loss, self._class_hits.double().flatten()]).cpu()

    def summarize(self, totals: torch.Tensor, class_names: list[str] | None) -> MetricResult:
        hits = totals[1:].reshape(3, self.num_classes).long()
        count = int(hits[0].sum())
        denominator = max(count, 1)
        values = {
            "top1": int(hits[1].sum()) / denominator,
            "top5": int(hits[2].sum()) / denominator,
            "loss": float(totals[0]) / denominator,
        }
        return MetricResult(count, values, "top1", _per_class(hits, class_names))


def _per_class(hits: torch.Tensor, class_names: list[str] | None) -> list[dict[str, Any]]:
    rows = []
    for index in torch.nonzero(hits[0]).flatten().tolist():
        total = int(hits[0, index])
        rows.append(
            {
                "index": index,
                "label": class_names[index] if class_names else str(index),
                "num_samples": total,
                "top1": int(hits[1, index]) / total,
                "top5": int(hits[2, index]) / total,
            }
        )
    return rows


class Classification(Task):
    name = "classification"
    pipeline_tag = "image-classification"
    primary_metric = "top1"

    def metric(self, num_classes: int) -> ClassificationMetric:
        return ClassificationMetric(num_classes)

    def labelled_rows(self, targets: torch.Tensor) -> torch.Tensor:
        # -1: no label, or a class the training split lacks
        return targets >= 0

    def check_targets(self, targets: torch.Tensor, num_classes: int, where: str,
                      samples: torch.Tensor | None = None) -> None:  # fmt: skip
        if len(targets) and int(targets.max()) >= num_classes:
            row = int(targets.argmax())
            sample = "" if samples is None else f" in sample {int(samples[row])}"
            raise LabelRangeError(
                f"{where}: label {int(targets.max())} is out of range{sample}: the model has "
                f"{num_classes} classes (0 to {num_classes - 1})"
            )

    def loss(
        self, outputs: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        if targets.is_floating_point():  # probability targets (mixup / cutmix)
            return F.cross_entropy(outputs.float(), targets)
        return F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing)

    def describe(
        self, outputs: torch.Tensor, class_names: list[str], top_k: int
    ) -> list[list[dict[str, Any]]]:
        k = min(top_k, outputs.shape[-1])
        scores, indices = outputs.float().softmax(dim=-1).topk(k, dim=-1)
        return [
            [
                {"index": index, "label": class_names[index], "score": score}
                for index, score in zip(row_indices, row_scores, strict=True)
            ]
            for row_scores, row_indices in zip(scores.cpu().tolist(), indices.cpu().tolist(),
                                               strict=True)  # fmt: skip
        ]


CLASSIFICATION = Classification()
