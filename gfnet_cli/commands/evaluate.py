"""Evaluating a MODEL on a DATASET: top-1, top-5, cross-entropy, throughput, per-class accuracy.

Images are decoded and transformed in DataLoader workers; an unreadable image is counted and
skipped so a long run is never lost to one bad file. Labels are matched to the model's classes
by name before anything runs, so a dataset listing the same classes in another order is scored
correctly and one with other classes is refused up front instead of yielding a silent 0%.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gfnet_cli.data.datasets import (
    Batch,
    DatasetError,
    ImageDataset,
    TorchImageDataset,
    TorchIterableImageDataset,
    collate_skipping_failures,
    load_image_dataset,
)
from gfnet_cli.data.transforms import EvalTransform, eval_transform
from gfnet_cli.device import (
    accumulator_dtype,
    autocast_context,
    check_precision,
    resolve_device,
)
from gfnet_cli.engine.inference import ProgressCallback, check_at_least, prepare_model
from gfnet_cli.errors import GFNetError, UsageError
from gfnet_cli.hub.serialization import write_text_atomic
from gfnet_cli.labels import imagenet_class_names, imagenet_synsets, normalize_class_name
from gfnet_cli.models.gfnet import GFNet

logger = logging.getLogger(__name__)

LABEL_ORDERS = ("auto", "index")
MAX_REPORTED_SKIPS = 20


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

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (atomically: a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def evaluate(
    model: str | GFNet,
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
) -> EvaluationResult:
    """Score ``model`` on one split of ``dataset`` (validation, then test, by default).

    ``model``: a MODEL argument, a loaded :class:`GFNet`, or an ``.onnx`` file written by
    ``gfnet export`` (run by onnxruntime, preprocessing and labels read from the file).

    ``label_order="auto"`` maps the dataset's classes to the model's by name (refusing
    classes it cannot match); ``"index"`` takes label ids as model class indices.
    ``max_samples`` takes evenly spaced samples (the first ones when streaming), so a
    class-sorted folder is still covered. ``num_workers=None`` picks one per spare core.
    ``progress(completed, total)`` is called after each batch (``total`` is ``None`` when a
    stream's length is unknown); without it, evaluation is silent apart from logging.
    """
    check_at_least("batch_size", batch_size, 1)
    check_at_least("max_samples", max_samples, 1)
    check_at_least("num_workers", num_workers, 0)
    if label_order not in LABEL_ORDERS:
        raise UsageError(
            f"label_order must be one of {', '.join(LABEL_ORDERS)}, got {label_order!r}",
            param="label_order",
        )
    report = progress
    torch_device = resolve_device(device)
    precision = check_precision(torch_device, precision)
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
    label_map, mapping = match_labels(data, net, label_order)
    transform = eval_transform(net.config, img_size)
    loader, total = _build_loader(
        data, transform, label_map, batch_size, max_samples, num_workers, torch_device
    )
    logger.info(
        "evaluating %s on %s (%s, %s samples) at %s px, batch %d, %d worker(s), %s %s",
        _model_name(model),
        data.name,
        data.split,
        total if total is not None else "?",
        "x".join(map(str, transform.crop)),
        batch_size,
        loader.num_workers,
        torch_device,
        precision,
    )

    start = time.perf_counter()
    tally = _score(net, loader, torch_device, precision, max_samples, total, report,
                   f"{data.name} [{data.split}]")  # fmt: skip
    elapsed = time.perf_counter() - start

    if tally.count == 0:
        first = f" (first: {tally.skipped[0]['error']})" if tally.skipped else ""
        raise GFNetError(f"no sample could be evaluated: {tally.num_skipped} skipped{first}")
    if tally.num_skipped:
        logger.warning("skipped %d unreadable or unlabelled sample(s)", tally.num_skipped)
    return EvaluationResult(
        model=_model_name(model),
        dataset=data.name,
        split=data.split,
        num_samples=tally.count,
        top1=tally.correct1 / tally.count,
        top5=tally.correct5 / tally.count,
        loss=tally.loss / tally.count,
        images_per_second=tally.count / elapsed if elapsed > 0 else 0.0,
        num_skipped=tally.num_skipped,
        dataset_config=dataset_config,
        img_size=list(transform.crop),
        label_mapping=mapping,
        per_class=tally.per_class(net.config.labels),
        skipped=tally.skipped,
        batch_size=batch_size,
        device=str(torch_device),
        precision=precision,
        elapsed_s=elapsed,
    )


# ---------------------------------------------------------------------------------- loading
def require_labels(data: ImageDataset) -> None:
    """Refuse a split without labels, before any model is loaded (shared with robustness)."""
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
    workers = _num_workers(num_workers)
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
        torch_data = _evenly_spaced(data, transform, label_map, max_samples)
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


def _evenly_spaced(
    data: ImageDataset,
    transform: EvalTransform,
    label_map: dict[int, int] | None,
    max_samples: int | None,
) -> torch.utils.data.Dataset:
    """A map-style view of ``data``; ``max_samples`` evenly spaced samples when given."""
    if len(data) == 0:
        raise DatasetError(f"{data.name} ({data.split}) holds no samples")
    torch_data = TorchImageDataset(data, transform, label_map)
    count = len(torch_data)
    if max_samples is None or max_samples >= count:
        return torch_data
    return torch.utils.data.Subset(
        torch_data, [i * count // max_samples for i in range(max_samples)]
    )


def _num_workers(requested: int | None) -> int:
    """``requested``, or by default one worker per spare core (at most 8)."""
    if requested is not None:
        return requested
    return min(8, max(0, (os.cpu_count() or 1) - 1))


# ---------------------------------------------------------------------------------- scoring
def _score(
    net: GFNet,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    precision: str,
    max_samples: int | None,
    total: int | None,
    progress: ProgressCallback | None,
    split: str = "the dataset",
) -> _Tally:
    """Run every batch of ``loader`` through ``net``, stopping after ``max_samples``;
    ``split`` names the data in messages."""
    tally = _Tally(net.num_classes)
    with torch.inference_mode():
        for batch in loader:
            if max_samples is not None and tally.seen + batch.rows > max_samples:
                batch = _truncate(batch, max_samples - tally.seen)
            tally.seen += batch.rows
            _score_batch(net, batch, tally, device, precision, split)
            if progress is not None:
                progress(tally.seen, total)
            if max_samples is not None and tally.seen >= max_samples:
                break
    tally.finish()
    return tally


def _score_batch(
    net: GFNet, batch: Batch, tally: _Tally, device: torch.device, precision: str,
    split: str = "the dataset",
) -> None:
    """Count the batch's unreadable and unlabelled samples as skipped; score the rest.

    Labels are range-checked here, on the host: on a GPU an out-of-range label would be a
    device-side assert instead of a message naming it.
    """
    for index, reason in batch.failures:
        tally.skip(index, reason)
    labelled = batch.labels >= 0  # the labels stay on the host: reading them costs no sync
    for index in batch.indices[~labelled].tolist():
        tally.skip(index, "no label")
    if not labelled.any():
        return
    labels = batch.labels[labelled]
    if int(labels.max()) >= net.num_classes:
        raise LabelMismatchError(
            f"{split}: label {int(labels.max())} is out of range: the model has "
            f"{net.num_classes} classes (0 to {net.num_classes - 1})"
        )
    images, targets = batch.labelled_to(device)  # indexed after the (pinned) transfer
    with autocast_context(device, precision):
        logits = net(images)
    tally.add(logits.float(), targets)


def _truncate(batch: Batch, keep: int) -> Batch:
    """Keep the first ``keep`` samples of a batch (failures first: they were read first)."""
    failures = batch.failures[:keep]
    rest = max(0, keep - len(failures))
    return Batch(batch.images[:rest], batch.labels[:rest], batch.indices[:rest], failures)


def _model_name(model: str | GFNet) -> str:
    if isinstance(model, GFNet):
        return model.config.architecture or "GFNet"
    return str(model)


# ---------------------------------------------------------------------------------- labels
def match_labels(
    data: ImageDataset, model: GFNet, label_order: str = "auto"
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


# ---------------------------------------------------------------------------------- tallies
class _Tally:
    """Running sums: correct top-1/top-5, summed cross-entropy, per-class counts, skips.

    The sums stay on the logits' device and are read once, by :meth:`finish`: reading them
    after every batch (``.item()``, ``.cpu()``) would make the host wait for the device each
    time. ``count`` and the skips are host numbers, known without the device.
    """

    def __init__(self, num_classes: int) -> None:
        self.k = min(5, num_classes)
        self.count = self.correct1 = self.correct5 = self.seen = self.num_skipped = 0
        self.loss = 0.0
        self.class_total = torch.zeros(num_classes, dtype=torch.long)
        self.class_top1 = torch.zeros(num_classes, dtype=torch.long)
        self.class_top5 = torch.zeros(num_classes, dtype=torch.long)
        self.skipped: list[dict[str, Any]] = []
        self._loss_sum: torch.Tensor | None = None  # on the device, in accumulator_dtype
        self._class_hits: torch.Tensor | None = None  # (3, classes): total, top-1, top-5

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if self._class_hits is None:
            device = logits.device
            self._loss_sum = torch.zeros((), dtype=accumulator_dtype(device), device=device)
            self._class_hits = torch.zeros(3, len(self.class_total), dtype=torch.long,
                                           device=device)  # fmt: skip
        self._loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        top = logits.topk(self.k, dim=-1).indices
        hits = torch.stack(
            [torch.ones_like(targets, dtype=torch.bool), top[:, 0] == targets,
             (top == targets[:, None]).any(dim=-1)]
        ).long()  # fmt: skip
        # scatter_add_ has a deterministic CUDA kernel (bincount with weights has none).
        self._class_hits.scatter_add_(1, targets.expand(3, -1), hits)
        self.count += len(targets)

    def finish(self) -> None:
        """Read the device's sums into ``loss``, ``correct1/5`` and the per-class counts."""
        if self._class_hits is None or self._loss_sum is None:
            return
        hits = self._class_hits.cpu()
        self.loss = float(self._loss_sum)
        self.class_total, self.class_top1, self.class_top5 = hits[0], hits[1], hits[2]
        self.correct1, self.correct5 = int(hits[1].sum()), int(hits[2].sum())

    def skip(self, index: int, reason: str) -> None:
        self.num_skipped += 1
        if len(self.skipped) < MAX_REPORTED_SKIPS:
            self.skipped.append({"index": int(index), "error": reason})
            logger.warning("skipped sample %d: %s", index, reason)

    def per_class(self, labels: list[str]) -> list[dict[str, Any]]:
        rows = []
        for index in torch.nonzero(self.class_total).flatten().tolist():
            total = int(self.class_total[index])
            rows.append(
                {
                    "index": index,
                    "label": labels[index],
                    "num_samples": total,
                    "top1": int(self.class_top1[index]) / total,
                    "top5": int(self.class_top5[index]) / total,
                }
            )
        return rows
