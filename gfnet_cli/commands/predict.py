"""Classifying images: files, folders and glob patterns in, top-k classes per image out.

An input that cannot be read becomes an error entry with the reason; every other input is
still predicted, so one bad file never costs a user the rest of a folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gfnet_cli.commands.predict_segmentation import predict_segmentation
from gfnet_cli.data.images import ImageReadError, expand_inputs, open_image
from gfnet_cli.data.transforms import eval_transform
from gfnet_cli.device import check_precision, inference, resolve_device
from gfnet_cli.engine.inference import (
    check_at_least,
    check_img_size,
    model_task,
    prepare_model,
    refuse_onnx_segmentation,
)
from gfnet_cli.errors import UsageError
from gfnet_cli.models.config import to_pair
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.tasks import get_task

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gfnet-xs"


@dataclass
class ImagePrediction:
    """The result for one input: ``predictions`` (best first), or ``error`` when unreadable."""

    image: str
    predictions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    mask: Any = field(default=None, repr=False)  # segmentation: the (H, W) class indices
    outputs: list[str] = field(default_factory=list)  # segmentation: the files written

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The ``predict --json`` entry of docs/cli.md: ``{"image", "predictions"}`` or
        ``{"image", "error"}``."""
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        if self.outputs:
            return {"image": self.image, "predictions": self.predictions, "outputs": self.outputs}
        return {"image": self.image, "predictions": self.predictions}


ImageInput = str | Path | Image.Image


def predict(
    images: ImageInput | Iterable[ImageInput],
    model: str | GFNetArchitecture = DEFAULT_MODEL,
    *,
    top_k: int = 5,
    img_size: int | tuple[int, int] | None = None,
    batch_size: int = 32,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    output_dir: str | Path | None = None,
    overlay: bool = False,
    overwrite: bool = False,
) -> list[ImagePrediction]:
    """Top-``top_k`` classes for each image, in input order (one entry per expanded input).

    ``images``: paths, folders (searched recursively by image extension), glob patterns or PIL
    images. ``model``: a MODEL argument, a loaded :class:`GFNet`, or an ``.onnx`` file written
    by ``gfnet export`` (run by onnxruntime at its exported size). ``img_size`` runs the model
    at another resolution (weights resized at load, transform at that size).

    A segmentation MODEL gives each image's classes by pixel share, its mask (``mask``) and,
    with ``output_dir``, ``<stem>.png`` mask files (``overlay``: blended pictures too; never
    replacing files without ``overwrite``); see :mod:`gfnet_cli.commands.predict_segmentation`.
    """
    check_at_least("top_k", top_k, 1)
    check_at_least("batch_size", batch_size, 1)
    check_img_size(img_size)
    inputs = expand_images(images)
    if not inputs:
        raise UsageError("no images given")
    torch_device = resolve_device(device)
    precision = check_precision(torch_device, precision)
    if model_task(model) == "segmentation":
        entries = [ImagePrediction(image=input_name(item, i)) for i, item in enumerate(inputs)]
        predict_segmentation(
            inputs, [entry.image for entry in entries],
            model, open_input=_open, entries=entries,
            device=torch_device, precision=precision,
            img_size=None if img_size is None else min(to_pair(img_size)), top_k=top_k,
            output_dir=output_dir, overlay=overlay, overwrite=overwrite,
        )  # fmt: skip
        return entries
    if output_dir is not None or overlay:
        raise UsageError("output_dir and overlay write segmentation masks: this MODEL "
                         "classifies", param="output_dir")  # fmt: skip
    net = prepare_model(model, img_size, torch_device, precision, allow_onnx=True)
    refuse_onnx_segmentation(net)
    transform = eval_transform(net.config, img_size)
    task = get_task(net.config.task)

    results: list[ImagePrediction] = []
    for batch in image_batches(inputs, batch_size, transform):
        if batch.images is not None:
            with inference(torch_device, precision):
                logits = net(batch.images.to(torch_device))
            described = task.describe(logits, net.config.labels, top_k)
            for entry, predictions in zip(batch.ready, described, strict=True):
                entry.predictions = predictions
        results.extend(batch.entries)
    return results


@dataclass
class ImageBatch:
    """One batch of inputs: an entry for each, the readable ones stacked in ``images``."""

    entries: list[ImagePrediction]  # every input, in order; unreadable ones carry ``error``
    ready: list[ImagePrediction]  # the entries of the rows of ``images``
    images: torch.Tensor | None  # None when no input of the batch could be read
    end: int  # how many inputs the batches so far cover


def image_batches(
    inputs: Sequence[ImageInput],
    batch_size: int,
    transform: Callable[[Image.Image], torch.Tensor],
) -> Iterator[ImageBatch]:
    """Open and transform ``inputs`` in batches; an unreadable one gets an ``error`` entry.

    Shared with ``embed``: the same inputs, the same error entries.
    """
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        entries = [
            ImagePrediction(image=input_name(item, start + i)) for i, item in enumerate(chunk)
        ]
        tensors, ready = [], []
        for item, entry in zip(chunk, entries, strict=True):
            try:
                tensors.append(transform(_open(item)))
                ready.append(entry)
            except ImageReadError as exc:
                entry.error = exc.reason
                logger.debug("cannot read %s: %s", entry.image, exc.reason)
        images = torch.stack(tensors) if tensors else None
        yield ImageBatch(entries, ready, images, start + len(chunk))


def expand_images(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """Expand paths, folders and globs in order; PIL images pass through."""
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    expanded: list[ImageInput] = []
    for item in images:
        if isinstance(item, Image.Image):
            expanded.append(item)
            continue
        found = expand_inputs([item])
        # A folder without images is reported, not silently dropped.
        expanded.extend(found if found else [str(item)])
    return expanded


def _open(item: ImageInput) -> Image.Image:
    if isinstance(item, Image.Image):
        return open_image(item)
    if Path(item).is_dir():
        raise ImageReadError(f"{item}: a folder holding no images", "a folder holding no images")
    return open_image(item)


def input_name(item: ImageInput, position: int) -> str:
    return f"<image {position}>" if isinstance(item, Image.Image) else str(item)


def count_failures(results: Sequence[ImagePrediction]) -> int:
    """How many inputs could not be read (the CLI exits 2 when any could not)."""
    return sum(1 for result in results if not result.ok)
