"""Segmenting images: a mask PNG per image at the image's own size, classes by pixel share.

``predict`` hands a segmentation MODEL here. Each image's shorter side is resized to the
model's size (aspect kept), the logits are resized back to the image's size (bilinear) and
the arg-max is its mask: one class index per pixel, written as ``<stem>.png`` (mode ``P``
with the fixed palette of :func:`gfnet_cli.data.masks.palette`, so viewers show colours and
readers get the indices). ``overlay`` adds ``<stem>_overlay.png``: the picture blended with
the mask's colours. Existing files are never replaced without ``overwrite``, and two inputs
that would write the same file are refused before anything runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gfnet_cli.data.images import ImageReadError
from gfnet_cli.data.masks import colorize, mask_image
from gfnet_cli.data.segmentation import SegmentationEvalTransform
from gfnet_cli.device import inference
from gfnet_cli.engine.inference import prepare_segmentation_model
from gfnet_cli.errors import UsageError
from gfnet_cli.models.segmentation import GFNetForSegmentation
from gfnet_cli.tasks.segmentation import pixel_shares, resized_argmax

logger = logging.getLogger(__name__)

OVERLAY_SUFFIX = "_overlay"
OVERLAY_ALPHA = 0.5  # the mask colours' weight in the blended picture


def output_paths(names: Sequence[str], output_dir: Path, overlay: bool) -> list[list[Path]]:
    """The files each input will write: ``<stem>.png`` (and ``<stem>_overlay.png``).

    Two inputs with the same stem would overwrite each other: refused, naming both.
    """
    paths: list[list[Path]] = []
    owner: dict[Path, str] = {}
    for position, name in enumerate(names):
        stem = Path(name).stem if not name.startswith("<image") else f"image_{position}"
        files = [output_dir / f"{stem}.png"]
        if overlay:
            files.append(output_dir / f"{stem}{OVERLAY_SUFFIX}.png")
        for file in files:
            if file in owner:
                raise UsageError(
                    f"{owner[file]} and {name} would both write {file}: segment them into "
                    "different output folders",
                    param="output_dir",
                )
            owner[file] = name
        paths.append(files)
    return paths


def refuse_existing(paths: list[list[Path]], overwrite: bool) -> None:
    """Stop before any work when an output exists and ``overwrite`` is off."""
    if overwrite:
        return
    existing = [file for files in paths for file in files if file.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(
            f"{existing[0]} exists{more}; pass overwrite to replace it", param="overwrite"
        )


def segment_image(
    net: GFNetForSegmentation,
    image: Image.Image,
    transform: SegmentationEvalTransform,
    device: torch.device,
    precision: str,
) -> np.ndarray:
    """The class index of every pixel of ``image`` at its own size, an (H, W) array."""
    pixels = transform.image(image)[None].to(device)
    with inference(device, precision):
        logits = net(pixels)
    small = net.num_classes <= 256
    size = (image.size[1], image.size[0])
    mask = resized_argmax(logits.float(), size, torch.uint8 if small else torch.int32)
    return mask[0].cpu().numpy().astype(np.uint8 if small else np.uint16, copy=False)


def write_outputs(image: Image.Image, mask: np.ndarray, files: list[Path]) -> list[str]:
    """Write the mask PNG (and the overlay); returns the paths written."""
    files[0].parent.mkdir(parents=True, exist_ok=True)
    mask_image(mask).save(files[0])
    if len(files) > 1:
        # PIL blends in 8 bits: no float copies of a large photograph
        colours = Image.fromarray(colorize(mask))
        Image.blend(image.convert("RGB"), colours, OVERLAY_ALPHA).save(files[1])
    return [str(file) for file in files]


def predict_segmentation(
    inputs: Sequence[Any],
    names: Sequence[str],
    model: str | Path | GFNetForSegmentation,
    *,
    open_input: Any,
    entries: Sequence[Any],
    device: torch.device,
    precision: str,
    img_size: int | None = None,
    top_k: int = 5,
    output_dir: str | Path | None = None,
    overlay: bool = False,
    overwrite: bool = False,
) -> None:
    """Segment every input into its entry (``predictions``, ``mask``, ``outputs``); an
    unreadable input gets its ``error`` and the rest are still segmented. Output files are
    checked before the model is loaded."""
    if overlay and output_dir is None:
        raise UsageError("overlay writes pictures: give output_dir", param="overlay")
    paths = output_paths(names, Path(output_dir), overlay) if output_dir is not None else None
    if paths is not None:
        refuse_existing(paths, overwrite)
    net = prepare_segmentation_model(model, device)
    config = net.config
    transform = SegmentationEvalTransform(img_size or min(config.image_size), config.mean,
                                          config.std)  # fmt: skip
    for position, (item, entry) in enumerate(zip(inputs, entries, strict=True)):
        try:
            image = open_input(item)
        except ImageReadError as exc:
            entry.error = exc.reason
            continue
        mask = segment_image(net, image, transform, device, precision)
        entry.predictions = pixel_shares(torch.from_numpy(mask.astype(np.int64)),
                                         config.labels, top_k)  # fmt: skip
        entry.mask = mask
        if paths is not None:
            entry.outputs = write_outputs(image, mask, paths[position])
