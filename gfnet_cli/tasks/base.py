"""The task seam: what differs between tasks, behind one small interface.

A :class:`Task` says what its targets are (which rows of a batch can be scored, which values
are valid), what the training loss is, which :class:`Metric` scores it, which metric picks
the best epoch, and what ``predict`` reports for one output. The loops — training, its
evaluation, ``evaluate``, ``robustness``, ``predict`` — are written once over it
(:mod:`gfnet_cli.engine.scoring`); a new task is a new module here, not an edit of every loop.

Metrics keep their sums on the device and are read once per evaluation: reading a device
tensor after every batch (``.item()``, ``.cpu()``) makes the host wait for the device each
time. :meth:`Metric.totals` is that one read, as a float64 host tensor that processes can
all-reduce before :meth:`Metric.summarize` turns it into figures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class MetricResult:
    """One evaluation's figures: ``values`` by name (fractions in [0, 1], losses as they are),
    ``primary`` the one that picks the best epoch (higher is better), per-class rows."""

    count: int  # samples scored
    values: dict[str, float]
    primary: str
    per_class: list[dict[str, Any]] = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.values[self.primary]


class Metric(ABC):
    """Sums over a split, accumulated on the outputs' device and read once."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    @abstractmethod
    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch of scored rows (fp32 outputs, targets on the same device)."""

    @abstractmethod
    def totals(self) -> torch.Tensor:
        """Every sum as one float64 host tensor: the one read of the device.

        Processes sum theirs (``all_reduce``) before :meth:`summarize`.
        """

    @abstractmethod
    def summarize(self, totals: torch.Tensor, class_names: list[str] | None) -> MetricResult:
        """The figures, from (possibly all-reduced) :meth:`totals`."""


class Task(ABC):
    """What a task is made of; one instance per task, stateless."""

    name: str  # "classification"
    pipeline_tag: str  # the Hub's name for it: "image-classification"
    primary_metric: str  # the figure that picks the best epoch: "top1"

    @abstractmethod
    def metric(self, num_classes: int) -> Metric:
        """A fresh metric for one evaluation."""

    @abstractmethod
    def labelled_rows(self, targets: torch.Tensor) -> torch.Tensor:
        """Which rows of a batch's (host) targets can be scored: a bool vector."""

    @abstractmethod
    def check_targets(self, targets: torch.Tensor, num_classes: int, where: str,
                      samples: torch.Tensor | None = None) -> None:  # fmt: skip
        """Refuse target values the model cannot have, while they are on the host.

        On a GPU an out-of-range target is a device-side assert that names nothing.
        ``targets`` are the scored rows only; ``where`` names the data in the message and
        ``samples`` (the rows' sample numbers, as ``Batch.indices`` holds them) the sample.
        """

    @abstractmethod
    def loss(
        self, outputs: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """The mean training loss (targets may be class indices or mixed probabilities)."""

    @abstractmethod
    def describe(
        self, outputs: torch.Tensor, class_names: list[str], top_k: int
    ) -> list[list[dict[str, Any]]]:
        """What ``predict`` reports for each row of a batch of outputs."""
