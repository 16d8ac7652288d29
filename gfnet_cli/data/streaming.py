"""The training stream for ``gfnet finetune --streaming``: exact to resume, with any worker count.

A process's stream is the split shuffled with a seeded buffer (``IterableDataset.shuffle``,
reshuffled per epoch by ``set_epoch``), split across processes (``split_dataset_by_node``) and
across DataLoader workers (``datasets`` gives each worker its own shards). Each worker decodes,
augments and batches its rows; the DataLoader hands the workers' batches to the loop in
round-robin order. Everything is a function of (seed, epoch, number of processes, number of
workers), so the position in an epoch is fully described by how many rows each worker has
consumed and which worker hands over the next batch.

Resuming therefore re-creates the epoch's stream, has each worker drop the rows it already
handed over (raw rows, never decoded) and lets the workers that come before the next one in
the round-robin emit one placeholder (``None``) first, so the DataLoader's order picks up
exactly where it stopped. ``IterableDataset.state_dict()`` is not used: it does not keep the
shuffle buffer's content, so a resumed epoch would differ from an uninterrupted one.

Each sample's augmentation is seeded by ``(seed, epoch, index)`` where ``index`` is unique in
the epoch: ``(position in its worker's stream * workers + worker) * processes + rank``.

Both tasks use this one stream: a classification split's rows are an image and a label
(:func:`~gfnet_cli.data.datasets._sample`), a segmentation split's an image and a mask
(:func:`~gfnet_cli.data.segmentation.segmentation_sample`, paired augmentation); an unreadable
image or mask, or a mask whose size differs from its image, is skipped and counted alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from gfnet_cli.data.datasets import (
    Batch,
    ImageDataset,
    _sample,
    collate_skipping_failures,
    undecoded,
)
from gfnet_cli.data.segmentation import SegmentationDataset, segmentation_sample

DEFAULT_SHUFFLE_BUFFER = 1000


@dataclass
class StreamPosition:
    """Where a process is in an epoch's stream (plain types: stored in checkpoints)."""

    epoch: int
    workers: int
    consumed: list[int] = field(default_factory=list)  # rows handed over, per worker
    next_worker: int = 0  # the worker whose batch comes next in the round-robin

    @classmethod
    def start(cls, epoch: int, workers: int) -> StreamPosition:
        return cls(epoch, workers, [0] * workers, 0)

    def advance(self, worker: int, rows: int) -> None:
        self.consumed[worker] += rows
        self.next_worker = (worker + 1) % self.workers

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "workers": self.workers, "consumed": list(self.consumed),
                "next_worker": self.next_worker}  # fmt: skip

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StreamPosition:
        return cls(int(state["epoch"]), int(state["workers"]),
                   [int(c) for c in state["consumed"]], int(state["next_worker"]))  # fmt: skip


def split_num_examples(data: ImageDataset | SegmentationDataset) -> int | None:
    """The split's size when the dataset's info records it (Hub metadata, save_to_disk)."""
    splits = getattr(getattr(data.dataset, "info", None), "splits", None)
    try:
        count = splits[data.split].num_examples if splits else None
    except (KeyError, TypeError):
        return None
    return int(count) if count else None


class TrainStream(torch.utils.data.IterableDataset):
    """One process's training stream, yielding whole :class:`Batch` es built in the workers.

    Use with ``DataLoader(batch_size=None)``; call :meth:`begin` before creating each epoch's
    iterator (the workers get a copy of this object as it is then). Batches carry the worker
    that built them (``batch.worker``) so the caller can keep a :class:`StreamPosition`.

    ``data`` is a classification split (``transform(image)``, reseeded per sample through its
    ``reseed``) or a segmentation one (``transform(image, mask, (epoch, index))``, masks
    reduced with ``reduce_labels``).
    """

    def __init__(
        self,
        data: ImageDataset | SegmentationDataset,
        transform: Callable,
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
        label_map: dict[int, int] | None = None,
        reduce_labels: bool = False,
    ) -> None:
        from datasets.distributed import split_dataset_by_node

        self.image_column = data.image_column
        segmentation = isinstance(data, SegmentationDataset)
        self.label_column = None if segmentation else data.label_column
        self.mask_column = data.mask_column if segmentation else None
        self.transform = transform
        self.label_map = label_map
        self.reduce = reduce_labels  # read by segmentation_sample
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        images = [c for c in (data.image_column, self.mask_column) if c is not None]
        stream = undecoded(data.dataset, images)
        stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
        if world_size > 1:
            stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        self.stream = stream
        self.position = StreamPosition.start(0, 1)

    @property
    def num_shards(self) -> int:
        """How many workers can get data (``datasets`` gives each worker whole shards)."""
        return int(getattr(self.stream, "num_shards", 1) or 1)

    def begin(self, position: StreamPosition) -> None:
        self.position = position
        self.stream.set_epoch(position.epoch)

    def __iter__(self) -> Iterator[Batch | None]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        position = self.position
        if position.workers != workers:
            raise RuntimeError(f"stream position is for {position.workers} workers, not {workers}")
        if worker < position.next_worker:
            yield None  # keeps the DataLoader's round-robin where the interrupted epoch was
        skip = position.consumed[worker]
        items: list[tuple] = []
        for offset, row in enumerate(self.stream):
            if offset < skip:
                continue
            index = (offset * workers + worker) * self.world_size + self.rank
            items.append(self._sample(row, position.epoch, index))
            if len(items) == self.batch_size:
                yield _batch(items, worker)
                items = []
        if items:
            yield _batch(items, worker)

    def _sample(self, row: dict, epoch: int, index: int) -> tuple:
        """One row decoded and augmented as sample ``index`` of ``epoch`` (its seed); an
        unreadable or mismatched one as ``(None, reason, index)``."""
        if self.mask_column is not None:
            return segmentation_sample(self, row, (epoch, index), index)
        reseed = getattr(self.transform, "reseed", None)
        if reseed is not None:
            reseed(epoch, index)
        return _sample(self, row, index)


def _batch(items: list[tuple], worker: int) -> Batch:
    batch = collate_skipping_failures(items)
    batch.worker = worker
    return batch


def pass_through(item: Any) -> Any:
    """``collate_fn`` for loaders whose dataset already yields batches (picklable)."""
    return item
