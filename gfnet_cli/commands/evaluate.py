"""Evaluating a MODEL on a DATASET: top-1, top-5, cross-entropy, throughput, per-class accuracy.

Images are decoded and transformed in DataLoader workers; an unreadable image is counted and
skipped so a long run is never lost to one bad file. Labels are matched to the model's classes
by name before anything runs, so a dataset listing the same classes in another order is scored
correctly and one with other classes is refused up front instead of yielding a silent 0%.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gfnet_cli.commands.evaluate_segmentation import (
    SegmentationEvaluationResult,
    evaluate_segmentation,
)
from gfnet_cli.data.datasets import (
    DatasetError,
    ImageDataset,
    TorchImageDataset,
    TorchIterableImageDataset,
    collate_skipping_failures,
    load_image_dataset,
    spaced_subset,
)
from gfnet_cli.data.segmentation import (
    describe_columns,
    is_segmentation_features,
    load_segmentation_dataset,
)
from gfnet_cli.data.transforms import EvalTransform, eval_transform
from gfnet_cli.device import (
    check_precision,
    resolve_device,
)
from gfnet_cli.engine.inference import (
    ProgressCallback,
    check_at_least,
    check_img_size,
    default_workers,
    model_name,
    model_task,
    prepare_model,
    prepare_segmentation_model,
    refuse_onnx_segmentation,
)
from gfnet_cli.engine.scoring import Skips, score
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.serialization import check_output_file, save_json
from gfnet_cli.labels import imagenet_class_names, imagenet_synsets, normalize_class_name
from gfnet_cli.models.config import to_pair
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.tasks import get_task

logger = logging.getLogger(__name__)

LABEL_ORDERS = ("auto", "index")


class LabelMismatchError(UsageError):
    """The dataset's classes cannot be matched to the model's."""


@dataclass
class EvaluationResult:
    """What ``evaluate`` measured. ``top1``/``top5`` are fractions; ``loss`` is mean CE."""

    model: str
    dataset: str
    split: str
    num_samples: int
    top1: float
    top5: float
    loss: float
    images_per_second: float
    num_skipped: int = 0
    dataset_config: str | None = None
    img_size: list[int] = field(default_factory=list)
    label_mapping: str = "identity"  # identity | by_name | index
    per_class: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    batch_size: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The ``evaluate --json`` document of docs/cli.md (plus ``num_skipped``)."""
        keys = ("model", "dataset", "split", "num_samples", "top1", "top5", "loss")
        return {key: getattr(self, key) for key in keys} | {
            "images_per_second": self.images_per_second,
            "num_skipped": self.num_skipped,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, per-class accuracy included: the ``--output`` file."""
        return {"task": "image-classification", **asdict(self)}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON (atomically: a reader never sees half a file).

        An existing file is replaced only with ``overwrite``; the file's lock is held while
        it is written (stale partial files of an interrupted write are removed first).
        """
        return save_json(self.to_dict(), path, overwrite=overwrite)


def evaluate(
    model: str | GFNetArchitecture,
    dataset: str | ImageDataset,
    *,
    split: str | None = None,
    dataset_config: str | None = None,
    batch_size: int = 64,
    max_samples: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    num_workers: int | None = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    image_column: str | None = None,
    label_column: str | None = None,
    streaming: bool = False,
    label_order: str = "auto",
    progress: ProgressCallback | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    mask_column: str | None = None,
    reduce_labels: bool | None = None,
    slide: bool = False,
    strict: bool = False,
) -> EvaluationResult | SegmentationEvaluationResult:
    """Score ``model`` on one split of ``dataset`` (validation, then test, by default).

    ``model``: a MODEL argument, a loaded :class:`GFNet`, or an ``.onnx`` file written by
    ``gfnet export`` (run by onnxruntime, preprocessing and labels read from the file).

    ``label_order="auto"`` maps the dataset's classes to the model's by name (refusing
    classes it cannot match); ``"index"`` takes label ids as model class indices.
    ``max_samples`` takes evenly spaced samples (the first ones when streaming), so a
    class-sorted folder is still covered. ``num_workers=None`` picks one per spare core.
    ``progress(completed, total)`` is called after each batch (``total`` is ``None`` when a
    stream's length is unknown); without it, evaluation is silent apart from logging.

    A segmentation MODEL is scored by mIoU instead (:mod:`gfnet_cli.commands.evaluate_segmentation`:
    ``mask_column``, ``reduce_labels`` (default: the model's), ``slide``, ``strict``); its
    images go through the model one at a time, so ``batch_size`` does not apply.
    ``output``: also write the full result there as JSON (:meth:`EvaluationResult.save`);
    an existing file is refused before any work unless ``overwrite``.
    """
    check_output_file(output, overwrite=overwrite, parent_must_exist=False)
    check_img_size(img_size)
    check_at_least("batch_size", batch_size, 1)
    check_at_least("max_samples", max_samples, 1)
    check_at_least("num_workers", num_workers, 0)
    if label_order not in LABEL_ORDERS:
        raise UsageError(
            f"label_order must be one of {', '.join(LABEL_ORDERS)}, got {label_order!r}",
            param="label_order",
        )
    torch_device = resolve_device(device)
    precision = check_precision(torch_device, precision)
    if model_task(model) == "segmentation":
        if isinstance(dataset, ImageDataset):
            raise UsageError("a segmentation MODEL needs a DATASET of images and masks",
                             param="dataset")  # fmt: skip
        data_seg = load_segmentation_dataset(
            dataset, split, dataset_config=dataset_config, image_column=image_column,
            mask_column=mask_column, streaming=streaming,
        )  # fmt: skip
        check_at_least("img_size", None if img_size is None else min(to_pair(img_size)), 32)
        segmented = evaluate_segmentation(
            prepare_segmentation_model(model, torch_device), data_seg,
            model_label=model_name(model), max_samples=max_samples, num_workers=num_workers,
            device=torch_device, precision=precision, reduce_labels=reduce_labels, slide=slide,
            strict=strict, progress=progress, dataset_config=dataset_config,
            img_size=None if img_size is None else min(to_pair(img_size)),
        )  # fmt: skip
        if output is not None:
            segmented.save(output, overwrite=overwrite)
        return segmented
    data = (
        dataset
        if isinstance(dataset, ImageDataset)
        else load_image_dataset(
            dataset,
            split,
            dataset_config=dataset_config,
            image_column=image_column,
            label_column=label_column,
            streaming=streaming,
        )
    )
    require_labels(data)
    net = prepare_model(model, img_size, torch_device, precision, allow_onnx=True)
    refuse_onnx_segmentation(net)
    label_map, mapping = match_labels(data, net, label_order)
    transform = eval_transform(net.config, img_size)
    loader, total = _build_loader(
        data, transform, label_map, batch_size, max_samples, num_workers, torch_device
    )
    logger.info(
        "evaluating %s on %s (%s, %s samples) at %s px, batch %d, %d worker(s), %s %s",
        model_name(model),
        data.name,
        data.split,
        total if total is not None else "?",
        "x".join(map(str, transform.crop)),
        batch_size,
        loader.num_workers,
        torch_device,
        precision,
    )

    task = get_task(net.config.task)
    metric = task.metric(net.num_classes)
    skips = Skips()
    start = time.perf_counter()
    score(net, loader, task, metric, num_classes=net.num_classes, device=torch_device,
          precision=precision, where=f"{data.name} [{data.split}]", skips=skips,
          max_samples=max_samples, progress=progress, total=total)  # fmt: skip
    scores = metric.summarize(metric.totals(), net.config.labels)  # the one device read
    elapsed = time.perf_counter() - start

    skips.require_scores(scores.count, "unreadable or unlabelled")
    result = EvaluationResult(
        model=model_name(model),
        dataset=data.name,
        split=data.split,
        num_samples=scores.count,
        top1=scores.values["top1"],
        top5=scores.values["top5"],
        loss=scores.values["loss"],
        images_per_second=scores.count / elapsed if elapsed > 0 else 0.0,
        num_skipped=skips.count,
        dataset_config=dataset_config,
        img_size=list(transform.crop),
        label_mapping=mapping,
        per_class=scores.per_class,
        skipped=skips.reported,
        batch_size=batch_size,
        device=str(torch_device),
        precision=precision,
        elapsed_s=elapsed,
    )
    if output is not None:
        result.save(output, overwrite=overwrite)
    return result


# ---------------------------------------------------------------------------------- loading
def require_labels(data: ImageDataset) -> None:
    """Refuse a split without labels, before any model is loaded (shared with robustness)."""
    features = getattr(data.dataset, "features", None)
    if data.label_column is None and is_segmentation_features(features):
        raise DatasetError(
            f"{data.name} ({data.split}) is a segmentation dataset (columns: "
            f"{describe_columns(features)}): a classification MODEL needs a label per image; "
            "evaluate a segmentation MODEL on it",
            param="dataset",
        )
    if data.label_column is None:
        raise DatasetError(
            f"{data.name} ({data.split}) has no label column to measure accuracy against; "
            "pass label_column",
            param="label_column",
        )


def _build_loader(
    data: ImageDataset,
    transform: EvalTransform,
    label_map: dict[int, int] | None,
    batch_size: int,
    max_samples: int | None,
    num_workers: int | None,
    device: torch.device,
) -> tuple[torch.utils.data.DataLoader, int | None]:
    """The DataLoader decoding ``data`` in workers, and how many samples it will yield."""
    workers = default_workers(num_workers)
    if data.streaming:
        torch_data: Any = TorchIterableImageDataset(data, transform, label_map, max_samples)
        if workers > torch_data.num_shards:
            logger.info(
                "using %d worker(s): the stream has %d shard(s)",
                torch_data.num_shards,
                torch_data.num_shards,
            )
            workers = torch_data.num_shards
        total = max_samples
    else:
        torch_data = evenly_spaced(data, transform, label_map, max_samples)
        total = len(torch_data)
    loader = torch.utils.data.DataLoader(
        torch_data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_skipping_failures,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    return loader, total


def evenly_spaced(
    data: ImageDataset,
    transform: EvalTransform,
    label_map: dict[int, int] | None,
    max_samples: int | None,
) -> torch.utils.data.Dataset:
    """A map-style view of ``data``; ``max_samples`` evenly spaced samples when given."""
    if len(data) == 0:
        raise DatasetError(f"{data.name} ({data.split}) holds no samples")
    return spaced_subset(TorchImageDataset(data, transform, label_map), max_samples)


# ---------------------------------------------------------------------------------- labels
def match_labels(
    data: ImageDataset, model: GFNetArchitecture, label_order: str = "auto"
) -> tuple[dict[int, int] | None, str]:
    """How dataset label ids become model class indices: ``(label_map or None, mode)``.

    Raises :class:`LabelMismatchError` before any evaluation when they cannot be matched.
    """
    num_classes = model.num_classes
    model_names = model.config.class_names
    names = data.class_names
    if label_order == "index" or names is None:
        _check_label_range(data, num_classes)
        return None, "index"
    if not model_names:
        if len(names) == num_classes:
            logger.warning(
                "the model has no class names: taking the dataset's %d label ids as its classes",
                num_classes,
            )
            return None, "index"
        raise LabelMismatchError(
            f"the dataset has {len(names)} classes, the model {num_classes} (without names), "
            "so labels cannot be matched; evaluate a model trained on these classes"
        )
    if list(names) == list(model_names):
        return None, "identity"
    lookup = _name_lookup(model_names)
    label_map: dict[int, int] = {}
    used: set[int] = set()
    unmatched: list[str] = []
    for label, name in enumerate(names):
        index = lookup.get(normalize_class_name(name))
        if index is None or index in used:
            unmatched.append(name)
        else:
            label_map[label] = index
            used.add(index)
    if unmatched:
        # The model's names the dataset did not use come first: the likeliest counterparts.
        others = [n for i, n in enumerate(model_names) if i not in used]
        others += [n for i, n in enumerate(model_names) if i in used]
        raise LabelMismatchError(
            f"the dataset's class names do not match the model's: {len(unmatched)} of "
            f"{len(names)} not found ({_few(unmatched)}); dataset: {_few(names)}; "
            f"model: {_few(others)}; pass label_order index to take label ids as the model's "
            "class indices",
            param="label_order",
        )
    if all(label == index for label, index in label_map.items()):
        return None, "identity"
    logger.info("dataset classes mapped to the model's by name (%d classes)", len(label_map))
    return label_map, "by_name"


def _check_label_range(data: ImageDataset, num_classes: int) -> None:
    if data.class_names is not None:
        if len(data.class_names) > num_classes:
            raise LabelMismatchError(
                f"the dataset has {len(data.class_names)} classes, the model only {num_classes}"
            )
        return
    if data.streaming:
        return  # unknown up front; the evaluation loop refuses out-of-range ids
    values = [v for v in data.dataset.unique(data.label_column) if v is not None]
    if values and (max(values) >= num_classes or min(values) < -1):
        bad = max(values) if max(values) >= num_classes else min(values)
        raise LabelMismatchError(
            f"{data.name} [{data.split}]: label {bad} is out of range (labels range from "
            f"{min(values)} to {max(values)}): the model has {num_classes} classes"
        )


def _name_lookup(model_names: list[str]) -> dict[str, int]:
    """Model class index by normalized name, synonym (``a, b``) and ImageNet synset."""
    lookup: dict[str, int] = {}
    ambiguous: set[str] = set()

    def add(key: str, index: int) -> None:
        if key in lookup and lookup[key] != index:
            ambiguous.add(key)
        lookup.setdefault(key, index)

    aliases: list[tuple[str, int]] = []
    for index, name in enumerate(model_names):
        lookup[normalize_class_name(name)] = index
        aliases.extend((normalize_class_name(part), index) for part in str(name).split(","))
    if list(model_names) == imagenet_class_names():
        aliases.extend((synset.lower(), index) for index, synset in enumerate(imagenet_synsets()))
    full = dict(lookup)
    for key, index in aliases:
        if key and key not in full:
            add(key, index)
    for key in ambiguous:
        del lookup[key]
    return lookup


def _few(names: list[str], count: int = 4) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:count])
    return shown + (f", ... ({len(names)} in all)" if len(names) > count else "")
