"""The one scoring loop: a model over batches, scored by its task's metric.

``evaluate``, the evaluation inside ``finetune`` and ``robustness`` all score through here:
one filter for the rows that can be scored (:func:`scored_rows`: unreadable and unlabelled
samples become counted skips, target values are checked on the host, rows are picked on the
device after the copy), one skip record (:class:`Skips`), and metrics that stay on the device
until the evaluation ends (:func:`score`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch

from gfnet_cli.data.datasets import Batch
from gfnet_cli.device import autocast_context
from gfnet_cli.errors import GFNetError
from gfnet_cli.tasks.base import Metric, Task

logger = logging.getLogger(__name__)

MAX_REPORTED_SKIPS = 20  # skipped samples named in results and logs; the rest are counted

ProgressCallback = Callable[[int, int | None], None]


class Skips:
    """Samples an evaluation left out: all counted, the first :data:`MAX_REPORTED_SKIPS`
    named (``{"index", "error"}``) and logged."""

    def __init__(self) -> None:
        self.count = 0
        self.reported: list[dict[str, Any]] = []

    def add(self, index: int, reason: str) -> None:
        self.count += 1
        if len(self.reported) < MAX_REPORTED_SKIPS:
            self.reported.append({"index": int(index), "error": reason})
            logger.warning("skipped sample %d: %s", index, reason)

    def first_reason(self) -> str:
        return f" (first: {self.reported[0]['error']})" if self.reported else ""

    def require_scores(self, scored: int, skipped_as: str) -> None:
        """Refuse an evaluation that scored nothing (naming the first skip); log the skips
        (``skipped_as``: how they are described, "unreadable or unlabelled")."""
        if scored == 0:
            raise GFNetError(
                f"no sample could be evaluated: {self.count} skipped{self.first_reason()}"
            )
        if self.count:
            logger.warning("skipped %d %s sample(s)", self.count, skipped_as)


def scored_rows(
    batch: Batch,
    task: Task,
    num_classes: int,
    device: torch.device,
    where: str,
    skips: Skips | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The rows of ``batch`` that can be scored, as ``(images, targets)`` on ``device``.

    Unreadable samples and those without a target are recorded in ``skips`` (when given:
    a second pass over the same samples passes none). Targets are checked on the host, where
    reading them costs no device synchronization. ``None`` when no row can be scored.
    """
    if skips is not None:
        for index, reason in batch.failures:
            skips.add(index, reason)
    keep = task.labelled_rows(batch.labels)
    if skips is not None and not bool(keep.all()):
        for index in batch.indices[~keep].tolist():
            skips.add(index, "no label")
    if not bool(keep.any()):
        return None
    task.check_targets(batch.labels[keep], num_classes, where, batch.indices[keep])
    return batch.rows_to(device, keep)


def score(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[Batch],
    task: Task,
    metric: Metric,
    *,
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
    where: str = "the dataset",
    skips: Skips | None = None,
    max_samples: int | None = None,
    progress: ProgressCallback | None = None,
    total: int | None = None,
) -> int:
    """Run ``forward`` on every scorable row of ``batches`` into ``metric``; stop after
    ``max_samples`` rows (readable or not). Returns the rows consumed.

    Nothing is read from the device here: the caller reads ``metric.totals()`` once.
    """
    seen = 0
    with torch.inference_mode():
        for batch in batches:
            if max_samples is not None and seen + batch.rows > max_samples:
                batch = batch.first(max_samples - seen)
            seen += batch.rows
            rows = scored_rows(batch, task, num_classes, device, where, skips)
            if rows is not None:
                images, targets = rows
                with autocast_context(device, precision):
                    outputs = forward(images)
                metric.update(outputs.float(), targets)
            if progress is not None:
                progress(seen, total)
            if max_samples is not None and seen >= max_samples:
                break
    return seen
