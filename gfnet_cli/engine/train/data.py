"""Training data: the splits and their pre-flight checks, the training sources, the loaders.

A run's training batches come from a *source*: :class:`SampledSource` for a map-style split
(a seeded :class:`ResumableSampler` that can skip what a checkpoint already consumed) or
:class:`StreamSource` for ``streaming`` (a shuffled, sharded ``datasets`` stream whose
position is saved per worker). Both give the loop the same :class:`TrainSource` interface,
so the loop has one code path. The training transform (augmentation) is chosen in
:func:`train_source`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from gfnet_cli.data.augment import EpochSampleDataset, train_transform
from gfnet_cli.data.datasets import (
    EVAL_SPLITS,
    TRAIN_SPLITS,
    Batch,
    DatasetError,
    ImageDataset,
    TorchImageDataset,
    TorchIterableImageDataset,
    choose_split,
    collate_skipping_failures,
    find_columns,
    image_folder_classes,
    label_index,
    load_splits,
    refuse_mask_folder,
)
from gfnet_cli.data.segmentation import (
    SegmentationDataset,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    TorchIterableSegmentationDataset,
    TorchSegmentationDataset,
    describe_columns,
    is_segmentation_features,
    segmentation_split,
    segmentation_splits,
)
from gfnet_cli.data.streaming import StreamPosition, TrainStream, pass_through, split_num_examples
from gfnet_cli.data.transforms import eval_transform
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine import distributed
from gfnet_cli.engine.train.config import TrainConfig
from gfnet_cli.errors import UsageError
from gfnet_cli.labels import ade20k_class_names, read_label_file
from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.tasks.base import Task

logger = logging.getLogger(__name__)

# A streamed save_to_disk folder is cut into this many shards (at most one per row) so several
# DataLoader workers share it; Hub datasets come with their own shards (files).
STREAM_SHARDS = 64


# ====================================================================== splits
VALIDATION_SPLITS = ("validation", "valid", "val")


@dataclass
class PreparedData:
    """A run's splits: training, the one that chooses the best epoch, the one reported."""

    train: ImageDataset
    validation: ImageDataset | None  # chooses the best epoch (None: the last epoch is kept)
    test: ImageDataset | None  # evaluated once, on the chosen weights, at the end
    class_names: list[str]


def prepare_data(config: TrainConfig, dist: distributed.DistInfo) -> PreparedData:
    """The splits and the class names, with the pre-flight data checks.

    The best epoch is chosen on a validation split: DATASET's own, or
    ``validation_split_percentage`` % of the training split held out (seeded, stratified by
    class) when it has none. A test split is only ever reported, never chosen on.
    Segmentation: :func:`prepare_segmentation_data`.
    """
    if config.task == "segmentation":
        return prepare_segmentation_data(config, dist)
    refuse_mask_folder(config.dataset)
    # Rank 0 first: concurrent first loads of an image folder would race on the cache. The
    # others wait up to prepare_timeout for it (an ImageNet folder's first load is long).
    with distributed.main_process_first(timedelta(minutes=config.prepare_timeout)):
        splits = load_splits(
            config.dataset,
            dataset_config=config.dataset_config,
            streaming=config.streaming,
            num_shards=STREAM_SHARDS if config.streaming else None,
        )
    train_name, validation_name, test_name = _choose_splits(list(splits), config)
    train = _image_dataset(splits, train_name, config)
    _check_train_split(train, config)
    class_names = train.class_names or _class_names_from_values(train)
    if len(class_names) < 2:
        raise DatasetError(
            f"{config.dataset} [{train_name}] has {len(class_names)} class: a classifier "
            "needs at least 2"
        )
    _check_label_column(train, class_names)
    validation = None
    if validation_name is not None:
        validation = _evaluation_split(splits, validation_name, class_names, config, dist)
    elif config.validation_split_percentage > 0 and not config.streaming:
        train, validation = carve_validation(train, config.validation_split_percentage,
                                             config.seed)  # fmt: skip
    test = None
    if test_name is not None:
        test = _evaluation_split(splits, test_name, class_names, config, dist)
    if validation is None and dist.is_main:
        logger.warning("%s has no validation split (%s): the last epoch is kept",
                       config.dataset, _why_no_validation(config))  # fmt: skip
    return PreparedData(train, validation, test, class_names)


def _why_no_validation(config: TrainConfig) -> str:
    if config.streaming:
        return "a stream cannot be held out from"
    if config.validation_split_percentage == 0:
        return "validation_split_percentage is 0"
    return (f"{config.validation_split_percentage:g}% of its training split is not one image"
            + ("" if config.task == "segmentation" else " of any class"))


def _evaluation_split(splits: Any, name: str, class_names: list[str], config: TrainConfig,
                      dist: distributed.DistInfo) -> ImageDataset:  # fmt: skip
    data = _image_dataset(splits, name, config)
    if data.label_column is None:
        raise DatasetError(f"{config.dataset} [{name}] has no label column")
    if _is_empty(data):
        raise DatasetError(f"{config.dataset}: the {name!r} split is empty")
    if dist.is_main:
        _warn_unseen_classes(data, class_names)
    _check_label_column(data, class_names, _label_map(data, class_names), evaluation=True)
    return data


def _choose_splits(names: list[str], config: TrainConfig) -> tuple[str, str | None, str | None]:
    """The training, validation and test splits' names (None: not in DATASET).

    ``eval_split`` names the validation split (default: validation, valid or val);
    ``test_split`` the reported one (default: test, unless it already validates).
    """
    train_name = choose_split(names, config.train_split, TRAIN_SPLITS)
    if config.eval_split is not None:
        validation = choose_split(names, config.eval_split, EVAL_SPLITS)
    else:
        validation = next((s for s in VALIDATION_SPLITS if s in names and s != train_name),
                          None)  # fmt: skip
    if config.test_split is not None:
        test = choose_split(names, config.test_split, ("test",))
    else:
        test = "test" if "test" in names else None
    if test in (train_name, validation):
        test = None
    return train_name, validation, test


def carve_validation(train: ImageDataset, percentage: float, seed: int
                     ) -> tuple[ImageDataset, ImageDataset | None]:  # fmt: skip
    """``percentage`` % of each class of ``train`` held out as a validation split (None when
    that rounds to no image: the split is too small).

    Seeded by ``seed`` and stratified (each class keeps its share, and at least one training
    image), so the same run always holds out the same images, a resumed one included.
    """
    labels = np.asarray(
        [label_index(v, train.label_ids) for v in train.dataset[train.label_column]]
    )
    return _hold_out(train, labels, percentage, seed)


def carve_segmentation_validation(
    train: SegmentationDataset, percentage: float, seed: int
) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """``percentage`` % of ``train``'s images and masks held out as a validation split, as
    :func:`carve_validation` does; an image holds many classes, so the share is drawn from
    all rows at once (seeded, the same rows on every run and resume)."""
    return _hold_out(train, np.zeros(len(train), dtype=np.int64), percentage, seed)


def _hold_out(train: Any, strata: np.ndarray, percentage: float, seed: int) -> tuple[Any, Any]:
    """``train`` without, and with only, a seeded ``percentage`` % of each stratum's rows
    (at least one row of each stratum stays in training)."""
    rng = np.random.default_rng([seed, 0x7A11])
    held: list[np.ndarray] = []
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        rng.shuffle(members)
        count = min(int(round(len(members) * percentage / 100)), len(members) - 1)
        held.append(members[:count])
    validation_rows = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    if not len(validation_rows):
        return train, None
    keep = np.ones(len(strata), dtype=bool)
    keep[validation_rows] = False
    split_name = f"{train.split}[{percentage:g}% held out]"
    return (
        dataclasses.replace(train, dataset=train.dataset.select(np.flatnonzero(keep))),
        dataclasses.replace(train, dataset=train.dataset.select(validation_rows),
                            split=split_name),  # fmt: skip
    )


def _check_train_split(train: ImageDataset, config: TrainConfig) -> None:
    where = f"{config.dataset} [{train.split}]"
    features = getattr(train.dataset, "features", None)
    if train.label_column is None and is_segmentation_features(features):
        raise DatasetError(
            f"{where} is a segmentation dataset (columns: {describe_columns(features)}): "
            "train it with task segmentation",
            param="task",
        )
    if train.label_column is None:
        classes = image_folder_classes(config.dataset, train.split)
        if classes is not None and len(classes) < 2:
            found = f"one class ({classes[0]!r})" if classes else "no class sub-folders"
            raise DatasetError(
                f"{where} has {found}: a classifier needs at least 2 (one sub-folder of "
                "images per class)"
            )
        raise DatasetError(
            f"{where} has no label column (no ClassLabel feature, no 'label' column): "
            "pass label_column",
            param="label_column",
        )
    if _is_empty(train):
        raise DatasetError(f"{config.dataset}: the {train.split!r} split is empty")
    if not config.streaming:
        return
    if train.class_names is None:
        raise DatasetError(
            f"{where}: streaming needs a ClassLabel label column "
            "(the classes cannot be listed without reading the whole stream)",
            param="streaming",
        )
    _check_stream_length(train, config)


def _check_stream_length(train: ImageDataset | SegmentationDataset, config: TrainConfig) -> None:
    """A streamed training split of unknown size needs ``max_steps``: the learning-rate
    schedule must know where it ends."""
    if config.streaming and config.max_steps is None and split_num_examples(train) is None:
        raise UsageError(
            f"the size of {where(train)} is unknown, so a streamed run's learning-rate "
            "schedule has no end: pass max_steps",
            param="max_steps",
        )


def _image_dataset(splits: Any, name: str, config: TrainConfig) -> ImageDataset:
    data = splits[name]
    image_col, label_col, class_names = find_columns(
        data.features, config.image_column, config.label_column
    )
    return ImageDataset(data, config.dataset, name, image_col, label_col, class_names,
                        streaming=config.streaming)  # fmt: skip


def _is_empty(data: ImageDataset | SegmentationDataset) -> bool:
    if not data.streaming:
        return len(data) == 0
    if split_num_examples(data) is not None:
        return False
    return next(iter(data.dataset.take(1)), None) is None  # reads one row of the stream


def _class_names_from_values(data: ImageDataset) -> list[str]:
    values = sorted({int(v) for v in data.dataset[data.label_column] if v is not None})
    if values and values[0] < 0:
        raise DatasetError(f"label column {data.label_column!r} holds negative labels")
    return [str(i) for i in range(values[-1] + 1)] if values else []


# ====================================================================== segmentation
def prepare_segmentation_data(config: TrainConfig, dist: distributed.DistInfo) -> PreparedData:
    """The train, validation and test splits of images and masks (streams with
    ``streaming``), and the class names (:func:`segmentation_class_names`). Without a
    validation split of its own, ``validation_split_percentage`` % of the training images is
    held out (:func:`carve_segmentation_validation`) to choose the best epoch on; a stream
    cannot be held out from, so there the last epoch is kept."""
    streaming = config.streaming
    with distributed.main_process_first(timedelta(minutes=config.prepare_timeout)):
        splits = segmentation_splits(config.dataset, dataset_config=config.dataset_config,
                                     streaming=streaming,
                                     num_shards=STREAM_SHARDS if streaming else None)  # fmt: skip
    train = segmentation_split(
        config.dataset, splits, config.train_split, image_column=config.image_column,
        mask_column=config.mask_column, streaming=streaming, preferred_splits=TRAIN_SPLITS,
    )  # fmt: skip
    if _is_empty(train):
        raise DatasetError(f"{config.dataset}: the {train.split!r} split is empty")
    _check_stream_length(train, config)
    class_names = segmentation_class_names(config, train.class_names)
    named = replace(config, train_split=train.split)
    _, validation_name, test_name = _choose_splits(list(splits), named)

    def evaluation(name: str | None) -> SegmentationDataset | None:
        if name is None:
            return None
        data = segmentation_split(config.dataset, splits, name, image_column=train.image_column,
                                  mask_column=train.mask_column, streaming=streaming)  # fmt: skip
        if _is_empty(data):
            raise DatasetError(f"{config.dataset}: the {name!r} split is empty")
        return data

    validation = evaluation(validation_name)
    if validation is None and config.validation_split_percentage > 0 and not config.streaming:
        train, validation = carve_segmentation_validation(
            train, config.validation_split_percentage, config.seed
        )
    if validation is None and dist.is_main:
        logger.warning("%s has no validation split (%s): the last epoch is kept",
                       config.dataset, _why_no_validation(config))  # fmt: skip
    return PreparedData(train, validation, evaluation(test_name), class_names)


def segmentation_class_names(config: TrainConfig, dataset_names: list[str] | None) -> list[str]:
    """``labels`` (a file, or ``ade20k`` for the 150 shipped names), else the dataset's
    ``id2label.json``, else ``class_0..`` for ``num_classes``; a given ``num_classes`` must
    agree with the names."""
    if config.labels is not None:
        labels = config.labels
        names = ade20k_class_names() if labels == "ade20k" else read_label_file(labels)
    elif dataset_names is not None:
        names = dataset_names
    elif config.num_classes is not None:
        names = [f"class_{index}" for index in range(config.num_classes)]
    else:
        raise DatasetError(
            f"{config.dataset} does not name its classes: pass labels (a file, or ade20k) or "
            "num_classes",
            param=("labels", "num_classes"),
        )
    if config.num_classes is not None and config.num_classes != len(names):
        raise UsageError(f"num_classes is {config.num_classes} but the class names are "
                         f"{len(names)}", param="num_classes")  # fmt: skip
    if len(names) < 2:
        raise DatasetError(f"segmentation needs at least 2 classes, got {len(names)}")
    return list(names)


def segmentation_train_transform(model_config: GFNetConfig, config: TrainConfig
                                 ) -> SegmentationTrainTransform:  # fmt: skip
    """The paired training pipeline (or, without ``augment``, the resize to the crop's scale
    and a seeded crop, no flip nor colour change)."""
    crop = model_config.image_size
    if not config.augment:
        return SegmentationTrainTransform(
            crop, model_config.mean, model_config.std, seed=config.seed,
            scale=config.resize_scale, ratio_range=(1.0, 1.0), hflip=0.0, photometric=False,
        )  # fmt: skip
    return SegmentationTrainTransform(
        crop, model_config.mean, model_config.std, seed=config.seed, scale=config.resize_scale,
        hflip=config.hflip,
    )  # fmt: skip


def check_training_targets(task: Task, targets: torch.Tensor, num_classes: int,
                           split: str, samples: torch.Tensor | None = None) -> None:  # fmt: skip
    """A training batch's targets, checked on the host: classification's labels (none may be
    missing) or the task's own check (masks), naming the sample (``Batch.indices``)."""
    if task.name == "classification":
        check_labels(targets, num_classes, split)
    else:
        task.check_targets(targets, num_classes, split, samples)


# ====================================================================== label ranges
def where(data: ImageDataset | SegmentationDataset) -> str:
    """``DATASET [split]``: how messages name a split."""
    return f"{data.name} [{data.split}]"


def check_labels(labels: torch.Tensor, num_classes: int, split: str, *,
                 evaluation: bool = False) -> None:  # fmt: skip
    """Refuse a class index outside ``[0, num_classes)`` while it is still on the host.

    On a GPU such a label reaches ``cross_entropy`` as a device-side assert, which kills the
    process without saying which label and leaves the other DDP processes waiting. Cheap: a
    min and a max of a CPU tensor per batch. A negative evaluation label (unlabelled, or a class
    the training split lacks) is skipped by the evaluation, so it passes there; a negative
    training label (a sample without a label) does not.
    """
    if not len(labels):
        return
    low, high = int(labels.min()), int(labels.max())
    if high >= num_classes:
        fix = ("evaluate on a split with the training split's classes (eval_split)" if evaluation
               else "check the label column")  # fmt: skip
        raise DatasetError(
            f"{split}: label {high} is out of range: training has {num_classes} classes "
            f"(0 to {num_classes - 1}); {fix}",
            param="eval_split" if evaluation else "label_column",
        )
    if low < 0 and not evaluation:
        raise DatasetError(
            f"{split}: label {low} is not a class index (a sample without a label?): every "
            "training image needs one of the classes",
            param="label_column",
        )


def _check_label_column(data: ImageDataset, class_names: list[str],
                        label_map: dict[int, int] | None = None, *,
                        evaluation: bool = False) -> None:  # fmt: skip
    """:func:`check_labels` once over a map-style split's distinct labels, before training:
    every process reads the same column, so every process stops, and none waits for the
    others in a collective. A stream is checked batch by batch instead."""
    if data.streaming:
        return
    values = data.dataset.unique(data.label_column)
    labels = torch.tensor([label_index(v, data.label_ids, label_map) for v in values],
                          dtype=torch.long)  # fmt: skip
    check_labels(labels, len(class_names), where(data), evaluation=evaluation)


def _label_map(data: ImageDataset, class_names: list[str]) -> dict[int, int] | None:
    """Map another split's label ids onto the training classes by name."""
    if data.class_names is None or data.class_names == class_names:
        return None
    position = {name: i for i, name in enumerate(class_names)}
    return {i: position.get(name, -1) for i, name in enumerate(data.class_names)}


def _warn_unseen_classes(data: ImageDataset, class_names: list[str]) -> None:
    """An evaluation class the training split lacks is skipped (-1): say so, or the accuracy
    reads as if every image had been scored."""
    known = set(class_names)
    unseen = [name for name in data.class_names or [] if name not in known]
    if unseen:
        shown = ", ".join(repr(name) for name in unseen[:5]) + (" ..." if len(unseen) > 5 else "")
        logger.warning("%s has %d class(es) the training split lacks (%s): their images are "
                       "not evaluated", where(data), len(unseen), shown)  # fmt: skip


# ====================================================================== training sources
class TrainSource(Protocol):
    """Where training batches come from; the loop sees only this."""

    def batches_per_epoch(self) -> int | None:
        """Batches in an epoch, or None for a stream of unknown length."""

    def num_samples(self) -> int | None:
        """Training images in an epoch, or None when unknown."""

    def batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        """The batches of ``epoch``, after the first ``skip`` (consumed before a resume)."""

    def state(self) -> Any:
        """This process's position for a checkpoint (plain types)."""

    def resume(self, saved: Any, epoch: int, step_in_epoch: int, path: Path) -> None:
        """Continue from a checkpoint's :meth:`state` of every process."""


def train_source(data: ImageDataset | SegmentationDataset, model_config: GFNetConfig,
                 config: TrainConfig, dist: distributed.DistInfo) -> TrainSource:  # fmt: skip
    """The training batches of ``data``, augmented (or not) for ``model_config``'s input."""
    if isinstance(data, SegmentationDataset):
        paired = segmentation_train_transform(model_config, config)
        if config.streaming:
            return StreamSource(data, paired, config, dist)
        dataset = TorchSegmentationDataset(data, paired, reduce=config.reduce_labels)
        return SampledSource(data, None, config, dist, dataset=dataset)
    if config.augment:
        transform = train_transform(
            model_config, seed=config.seed, scale=config.crop_scale, hflip=config.hflip,
            randaugment=config.randaugment, color_jitter=config.color_jitter,
            reprob=config.reprob,
        )  # fmt: skip
    else:
        transform = eval_transform(model_config)
    source_type = StreamSource if config.streaming else SampledSource
    return source_type(data, transform, config, dist)


class ResumableSampler(DistributedSampler):
    """:class:`DistributedSampler` that yields ``(epoch, index)`` and can skip seen samples.

    The order of an epoch depends only on ``(seed, epoch)``, so skipping the samples a
    checkpoint already consumed reproduces the rest of the epoch exactly.
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:  # type: ignore[override]
        super().set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.skip :]
        return iter([(self.epoch, index) for index in indices])


class SampledSource:
    """Training batches from a map-style split: :class:`ResumableSampler` order."""

    def __init__(self, data: Any, transform: Any, config: TrainConfig,
                 dist: distributed.DistInfo, dataset: Any = None) -> None:  # fmt: skip
        # ``dataset``: a map-style view taking ``(epoch, index)`` keys (segmentation's)
        self.dataset = dataset if dataset is not None else EpochSampleDataset(data, transform)
        self.sampler = ResumableSampler(
            self.dataset, num_replicas=dist.world_size, rank=dist.rank, seed=config.seed
        )
        # Workers kept between epochs (not forked anew each epoch): the sampler runs in this
        # process and each sample's augmentation is seeded by (seed, epoch, index), so a
        # worker holds nothing an epoch changes.
        self.loader = _loader(self.dataset, self.sampler, config, dist.device,
                              persistent_workers=config.num_workers > 0)  # fmt: skip
        self.batch_size = config.batch_size

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def num_samples(self) -> int:
        return len(self.dataset)

    def batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch, skip_samples=skip * self.batch_size)
        return iter(self.loader)

    def state(self) -> None:
        return None  # (epoch, step_in_epoch) say where the sampler is

    def resume(self, saved: Any, epoch: int, step_in_epoch: int, path: Path) -> None:
        pass


class StreamSource:
    """Training batches from a stream (``--streaming``): :class:`TrainStream` in the workers.

    Keeps this process's :class:`StreamPosition` (saved in checkpoints). With several
    processes an epoch ends for all of them when the first one's stream ends: streams split
    by node need not be equally long, and a process without a batch cannot join the step.
    """

    def __init__(self, data: ImageDataset | SegmentationDataset, transform: Any,
                 config: TrainConfig, dist: distributed.DistInfo) -> None:  # fmt: skip
        self.stream = TrainStream(
            data, transform, batch_size=config.batch_size, seed=config.seed, rank=dist.rank,
            world_size=dist.world_size, buffer_size=config.shuffle_buffer,
            reduce_labels=config.reduce_labels,
        )  # fmt: skip
        self.num_examples = split_num_examples(data)
        self.rank, self.world_size, self.batch_size = dist.rank, dist.world_size, config.batch_size
        # datasets gives each worker whole shards: more workers than shards would idle.
        self.workers = max(1, min(config.num_workers, self.stream.num_shards))
        # Not persistent: begin() sets the epoch's position on the stream in this process, and
        # only workers forked after it (a new iterator each epoch) see it; kept workers would
        # replay the previous epoch's copy.
        self.loader = _loader(
            self.stream, None, config, dist.device,
            batch_size=None, num_workers=min(config.num_workers, self.workers),
            collate_fn=pass_through,
        )  # fmt: skip
        self.position = StreamPosition.start(0, self.workers)
        self.resumed: StreamPosition | None = None

    def batches_per_epoch(self) -> int | None:
        if self.num_examples is None:
            return None
        return math.ceil(math.ceil(self.num_examples / self.world_size) / self.batch_size)

    def num_samples(self) -> int | None:
        return self.num_examples

    def state(self) -> dict[str, Any]:
        return self.position.to_dict()

    def resume(self, saved: Any, epoch: int, step_in_epoch: int, path: Path) -> None:
        if step_in_epoch == 0:
            return  # an epoch boundary: the next epoch's stream starts from its beginning
        mine = saved[self.rank] if isinstance(saved, list) and self.rank < len(saved) else None
        position = StreamPosition.from_dict(mine) if mine else None
        if (
            position is None
            or len(saved) != self.world_size
            or position.workers != self.workers
            or position.epoch != epoch
        ):
            raise ckpt.CheckpointError(
                f"{path.name} stopped in the middle of a streamed epoch with another number of "
                "processes or num_workers; resume with the same ones as that run",
                param="num_workers",
            )
        self.resumed = position

    def batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        # ``skip`` needs no work here: the resumed position already excludes those rows.
        resumed, self.resumed = self.resumed, None
        self.position = (
            resumed
            if resumed is not None and skip > 0
            else StreamPosition.start(epoch, self.workers)
        )
        self.stream.begin(self.position)
        for batch in self.loader:
            if batch is None:
                continue  # a worker's placeholder that restores the round-robin order
            if not _every_process_has_a_batch(True, self.world_size):
                return
            self.position.advance(batch.worker, batch.rows)
            yield batch
        _every_process_has_a_batch(False, self.world_size)


def _every_process_has_a_batch(mine: bool, world_size: int) -> bool:
    if world_size == 1:
        return mine
    flags = torch.tensor([float(mine)])
    distributed.all_reduce_sum(flags)
    return int(flags.item()) == world_size


def eval_loader(data: ImageDataset | SegmentationDataset, model_config: GFNetConfig,
                class_names: list[str], config: TrainConfig,
                dist: distributed.DistInfo) -> DataLoader:  # fmt: skip
    """Evaluation batches: this process's share of the eval split (map-style or streamed).

    Segmentation: whole images (shorter side to the crop size), one per batch, masks as
    stored, as ``evaluate`` scores them.
    """
    batch_size: int | str = 1 if isinstance(data, SegmentationDataset) else "config"
    if config.streaming and dist.world_size > 1:
        from datasets.distributed import split_dataset_by_node

        data = dataclasses.replace(
            data,
            dataset=split_dataset_by_node(data.dataset, rank=dist.rank, world_size=dist.world_size),
        )
    view = _eval_view(data, model_config, class_names, config)
    if not config.streaming:
        return _loader(view, list(range(dist.rank, len(view), dist.world_size)), config,
                       dist.device, batch_size=batch_size)  # fmt: skip
    return _loader(view, None, config, dist.device, batch_size=batch_size,
                   num_workers=max(0, min(config.num_workers, view.num_shards)))  # fmt: skip


def _eval_view(data: ImageDataset | SegmentationDataset, model_config: GFNetConfig,
               class_names: list[str], config: TrainConfig) -> Any:  # fmt: skip
    """The torch dataset (a stream with ``streaming``) of an evaluation split's samples."""
    if isinstance(data, SegmentationDataset):
        paired = SegmentationEvalTransform(min(model_config.image_size), model_config.mean,
                                           model_config.std)  # fmt: skip
        if config.streaming:
            return TorchIterableSegmentationDataset(data, paired, reduce=config.reduce_labels)
        return TorchSegmentationDataset(data, paired, reduce=config.reduce_labels)
    view_type = TorchIterableImageDataset if config.streaming else TorchImageDataset
    return view_type(data, eval_transform(model_config), _label_map(data, class_names))


def _loader(
    dataset: Any,
    sampler: Any,
    config: TrainConfig,
    device: torch.device,
    *,
    batch_size: int | None | str = "config",
    num_workers: int | None = None,
    collate_fn: Any = collate_skipping_failures,
    persistent_workers: bool = False,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=config.batch_size if batch_size == "config" else batch_size,
        sampler=sampler,
        num_workers=config.num_workers if num_workers is None else num_workers,
        collate_fn=collate_fn,
        # Our own generator: building an iterator must not consume the global RNG, or the
        # drop-path masks after a resume would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(config.seed),
        worker_init_fn=_ignore_sigint,
        pin_memory=device.type == "cuda",  # Batch.pin_memory(): non_blocking copies overlap
        persistent_workers=persistent_workers,
    )


def _ignore_sigint(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which checkpoints then stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
