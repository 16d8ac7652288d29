"""Segmentation DATASETs: an image column and a mask column, paired transforms, slide inference.

A DATASET is what it is for classification (a Hub id, a ``save_to_disk`` folder, ``streaming``)
or a local folder of ``images/`` and ``annotations/`` (or ``masks/``) matched by file stem,
per split (``images/training`` + ``annotations/training`` as ADE20K ships, or
``train/images`` + ``train/masks``). Masks are PNGs of class indices
(:mod:`gfnet_cli.data.masks`); pixels labelled 255 are ignored.

Training augmentation is mmsegmentation's ADE20K pipeline, seeded per sample by
``(seed, epoch, index)`` as classification's is, so a resumed run sees the same crops:
random resize (ratio 0.5-2.0 of a base scale), random crop (``cat_max_ratio`` 0.75), flip,
photometric distortion, padding (image 0, mask 255). Images are resampled bilinearly, masks
with nearest neighbours only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

from gfnet_cli.data.augment import sample_rng
from gfnet_cli.data.datasets import (
    EVAL_SPLITS,
    DatasetError,
    _to_iterable,
    choose_split,
    is_mask_folder,
    load_splits,
    mask_folder_layout,
    undecoded,
)
from gfnet_cli.data.images import ImageReadError, is_image_file, open_image
from gfnet_cli.data.masks import IGNORE_INDEX, open_mask, reduce_labels
from gfnet_cli.data.transforms import normalize, to_tensor
from gfnet_cli.errors import UsageError
from gfnet_cli.labels import names_from_id2label

logger = logging.getLogger(__name__)

#: (image, mask) column names tried in order: scene_parse_150, transformers' examples, others
COLUMN_PAIRS = (
    ("image", "annotation"),
    ("pixel_values", "label"),
    ("image", "mask"),
    ("image", "label"),
    ("image", "segmentation"),
    ("image", "semantic_map"),
)
#: the message start of a skipped sample whose mask and image disagree in size (``strict``)
SIZE_MISMATCH = "mask size differs from its image"


@dataclass
class SegmentationDataset:
    """One split of a segmentation dataset and where its columns are."""

    dataset: Any  # datasets.Dataset or datasets.IterableDataset
    name: str
    split: str
    image_column: str
    mask_column: str
    class_names: list[str] | None
    streaming: bool = False

    def __len__(self) -> int:
        if self.streaming:
            raise TypeError("a streaming dataset has no length")
        return len(self.dataset)


# ---------------------------------------------------------------------------------- loading
def load_segmentation_dataset(
    dataset: str,
    split: str | None = None,
    *,
    dataset_config: str | None = None,
    image_column: str | None = None,
    mask_column: str | None = None,
    streaming: bool = False,
    preferred_splits: Sequence[str] = EVAL_SPLITS,
) -> SegmentationDataset:
    """One split of DATASET with its image and mask columns located."""
    splits = segmentation_splits(dataset, dataset_config=dataset_config, streaming=streaming)
    return segmentation_split(dataset, splits, split, image_column=image_column,
                              mask_column=mask_column, streaming=streaming,
                              preferred_splits=preferred_splits)  # fmt: skip


def segmentation_splits(
    dataset: str,
    *,
    dataset_config: str | None = None,
    streaming: bool = False,
    num_shards: int | None = None,
) -> Any:
    """Every split of DATASET: a folder of images and masks, or what ``datasets`` loads.

    ``num_shards``: as for :func:`load_splits`, how many shards a streamed local folder (or
    ``save_to_disk`` folder) is cut into so that several DataLoader workers share it.
    """
    path = Path(dataset).expanduser()
    if path.is_dir() and is_mask_folder(path):
        splits = mask_folder_splits(path)
        if streaming:
            splits = {name: _to_iterable(data, name, num_shards) for name, data in splits.items()}
        return splits
    return load_splits(dataset, dataset_config=dataset_config, streaming=streaming,
                       num_shards=num_shards)  # fmt: skip


def segmentation_split(
    dataset: str,
    splits: Any,
    split: str | None,
    *,
    image_column: str | None = None,
    mask_column: str | None = None,
    streaming: bool = False,
    preferred_splits: Sequence[str] = EVAL_SPLITS,
) -> SegmentationDataset:
    """One of ``splits`` (:func:`segmentation_splits`) with its columns located."""
    chosen = choose_split(list(splits), split, preferred_splits)
    data = splits[chosen]
    image_col, mask_col = find_mask_columns(data.features, image_column, mask_column)
    return SegmentationDataset(
        dataset=data,
        name=dataset,
        split=chosen,
        image_column=image_col,
        mask_column=mask_col,
        class_names=dataset_class_names(dataset),
        streaming=streaming,
    )


def describe_columns(features: Any) -> str:
    """The columns and their types, for messages: ``image (Image), label (ClassLabel, 3)``."""
    import datasets

    parts = []
    for name, feature in (features or {}).items():
        if isinstance(feature, datasets.ClassLabel):
            parts.append(f"{name} (ClassLabel, {feature.num_classes} classes)")
        elif isinstance(feature, datasets.Value):
            parts.append(f"{name} ({feature.dtype})")
        else:
            parts.append(f"{name} ({type(feature).__name__})")
    return ", ".join(parts) or "none"


def is_segmentation_features(features: Any) -> bool:
    """Whether a split's columns hold images and masks (two image columns, or a known pair)."""
    try:
        find_mask_columns(features)
    except DatasetError:
        return False
    return True


def find_mask_columns(
    features: Any, image_column: str | None = None, mask_column: str | None = None
) -> tuple[str, str]:
    """The image column and the mask column, by name (:data:`COLUMN_PAIRS`) unless given.

    A mask column holds images (an ``Image`` feature); a class-label column means a
    classification dataset, refused naming the columns found.
    """
    import datasets

    if features is None:
        raise DatasetError(
            "the dataset does not declare its features; pass image_column and mask_column",
            param="mask_column",
        )
    columns = list(features)
    for param, given in (("image_column", image_column), ("mask_column", mask_column)):
        if given is not None and given not in columns:
            raise DatasetError(f"{param} {given!r} not in {', '.join(columns)}", param=param)

    def is_image(name: str) -> bool:
        return isinstance(features[name], datasets.Image)

    if image_column is not None and mask_column is not None:
        return image_column, mask_column
    for image_name, mask_name in COLUMN_PAIRS:
        if image_column not in (None, image_name) or mask_column not in (None, mask_name):
            continue
        if image_name in columns and mask_name in columns and is_image(mask_name):
            return image_name, mask_name
    images = [name for name in columns if is_image(name)]
    if len(images) == 2 and image_column is None and mask_column is None:
        return images[0], images[1]
    raise DatasetError(
        f"no image and mask columns found (columns: {describe_columns(features)}); a "
        "segmentation dataset has an image column and a mask column of class-index images "
        "(pass image_column and mask_column); a class label per image is classification",
        param="mask_column",
    )


def dataset_class_names(dataset: str) -> list[str] | None:
    """Class names a dataset ships beside its data: an ``id2label.json`` ({"0": "wall", ...})
    in a local folder, or in a Hub dataset repository (as transformers' examples expect)."""
    path = Path(dataset).expanduser()
    file: Path | None = path / "id2label.json"
    if not path.is_dir():
        file = _hub_id2label(dataset)
    if file is None or not file.is_file():
        return None
    try:
        return names_from_id2label(json.loads(file.read_text()))
    except (OSError, ValueError) as exc:
        logger.warning("ignoring %s: %s", file, exc)
        return None


def _hub_id2label(repo_id: str) -> Path | None:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, "id2label.json", repo_type="dataset"))
    except Exception:  # absent, offline, private: the names come from elsewhere
        return None


def mask_folder_splits(path: Path) -> dict[str, Any]:
    """A folder of images and masks as ``datasets`` splits with ``image`` and ``annotation``
    columns (paths, decoded in the DataLoader's workers). An image without a mask of the
    same stem is left out and counted in the log."""
    import datasets

    splits = {}
    for split, (image_folder, mask_folder) in mask_folder_layout(path).items():
        masks = {p.stem: p for p in sorted(mask_folder.rglob("*")) if p.is_file()}
        images = sorted(p for p in image_folder.rglob("*") if p.is_file() and is_image_file(p))
        paired = [(image, masks[image.stem]) for image in images if image.stem in masks]
        if len(paired) < len(images):
            logger.warning(
                "%s: %d of %d image(s) have no mask of the same name in %s and are left out",
                image_folder, len(images) - len(paired), len(images), mask_folder,
            )  # fmt: skip
        if not paired:
            raise DatasetError(f"{image_folder}: no image has a mask of the same name in "
                               f"{mask_folder}")  # fmt: skip
        features = datasets.Features(
            {"image": datasets.Image(decode=False), "annotation": datasets.Image(decode=False)}
        )
        splits[split] = datasets.Dataset.from_dict(
            {"image": [str(i) for i, _ in paired], "annotation": [str(m) for _, m in paired]},
            features=features,
            split=split,
        )
    return splits


# ---------------------------------------------------------------------------------- samples
class TorchSegmentationDataset(torch.utils.data.Dataset):
    """A map-style view yielding ``(image tensor, mask tensor, index)``; an unreadable image
    or mask, or a mask whose size differs from its image, yields ``(None, reason, index)``.

    ``transform(image, mask, key)`` pairs them; ``key`` is the sample's index, or
    ``(epoch, index)`` from the training sampler (what seeds its augmentation).
    """

    def __init__(self, data: SegmentationDataset, transform: Any, *, reduce: bool = False) -> None:
        self.image_column, self.mask_column = data.image_column, data.mask_column
        stream = undecoded(data.dataset, [data.image_column, data.mask_column])
        self.dataset = stream
        self.transform = transform
        self.reduce = reduce

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> tuple:
        index = int(key[1]) if isinstance(key, tuple) else int(key)
        return segmentation_sample(self, self.dataset[index], key, index)


class TorchIterableSegmentationDataset(torch.utils.data.IterableDataset):
    """The streaming counterpart of :class:`TorchSegmentationDataset` (same items)."""

    def __init__(self, data: SegmentationDataset, transform: Any, *, reduce: bool = False,
                 max_samples: int | None = None) -> None:  # fmt: skip
        self.image_column, self.mask_column = data.image_column, data.mask_column
        stream = undecoded(data.dataset, [data.image_column, data.mask_column])
        self.dataset = stream.take(max_samples) if max_samples is not None else stream
        self.transform = transform
        self.reduce = reduce

    @property
    def num_shards(self) -> int:
        return int(getattr(self.dataset, "num_shards", 1) or 1)

    def __iter__(self) -> Iterator[tuple]:
        for index, row in enumerate(self.dataset):
            yield segmentation_sample(self, row, index, index)


def read_pair(row: dict, image_column: str, mask_column: str, *,
              reduce: bool = False) -> tuple[Image.Image, np.ndarray]:  # fmt: skip
    """The RGB image and the class-index mask of one row; ``ImageReadError`` when either
    cannot be read or their sizes differ (the message starts with :data:`SIZE_MISMATCH`)."""
    image = open_image(row[image_column])
    mask = open_mask(row[mask_column])
    if reduce:
        mask = reduce_labels(mask)
    if (mask.shape[1], mask.shape[0]) != image.size:
        name = _cell_name(row[mask_column])
        reason = (f"{SIZE_MISMATCH}: {name} is {mask.shape[1]}x{mask.shape[0]}, the image "
                  f"{image.size[0]}x{image.size[1]}")  # fmt: skip
        raise ImageReadError(reason, reason)
    return image, mask


def _cell_name(cell: Any) -> str:
    if isinstance(cell, dict) and cell.get("path"):
        return Path(str(cell["path"])).name
    if isinstance(cell, (str, Path)):
        return Path(cell).name
    return "the mask"


def segmentation_sample(view: Any, row: dict, key: Any, index: int) -> tuple:
    try:
        image, mask = read_pair(row, view.image_column, view.mask_column, reduce=view.reduce)
        tensor, target = view.transform(image, mask, key)
    except ImageReadError as exc:
        return None, str(exc), index
    return tensor, target, index


# ------------------------------------------------------------------------------- transforms
#: the longest side whole-image evaluation gives an image, in multiples of the shorter one:
#: mmsegmentation's test scale (2048, 512) with keep_ratio
LONG_SIDE_RATIO = 4


class SegmentationEvalTransform:
    """Whole-image evaluation: the image's shorter side resized to ``size`` (aspect kept,
    bilinear), normalized; the mask left at its own size (predictions are resized to it).

    As mmsegmentation's ``Resize(scale=(2048, 512), keep_ratio=True)``, the longer side stops
    at ``LONG_SIDE_RATIO * size``: a 2 x 40,000 strip would otherwise become 512 x 10,240,000
    pixels (63 GB as a tensor). Images up to 4:1, every usual photograph, are unaffected.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size, self.mean, self.std = int(size), list(mean), list(std)

    def image(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        scale = min(self.size / min(width, height),
                    LONG_SIDE_RATIO * self.size / max(width, height))  # fmt: skip
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if new_size != image.size:
            image = image.resize(new_size, Image.Resampling.BILINEAR)
        return normalize(to_tensor(image), self.mean, self.std)

    def __call__(self, image: Image.Image, mask: np.ndarray, key: Any = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        return self.image(image), torch.from_numpy(mask.astype(np.int64))

    def __repr__(self) -> str:
        return f"SegmentationEvalTransform(shorter side {self.size}, masks as stored)"


class SegmentationTrainTransform:
    """mmsegmentation's training pipeline, seeded per sample by ``(seed, epoch, index)``.

    RandomResize to ``ratio_range`` × ``scale`` (keep ratio: the image fits in
    ``scale``'s long × short side), RandomCrop to ``crop`` retrying up to 10 times while one
    class covers more than ``cat_max_ratio`` of the crop, horizontal flip (p 0.5),
    PhotoMetricDistortion (brightness, contrast, saturation, hue, each p 0.5), then
    normalization and padding to ``crop`` (image 0 after normalizing, as mmsegmentation pads;
    mask 255).
    """

    def __init__(
        self,
        crop: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        seed: int = 0,
        scale: tuple[int, int] | None = None,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        hflip: float = 0.5,
        photometric: bool = True,
    ) -> None:
        self.crop = (int(crop[0]), int(crop[1]))  # (height, width)
        self.scale = scale if scale is not None else (max(self.crop), min(self.crop))
        self.mean, self.std = list(mean), list(std)
        self.seed, self.ratio_range = int(seed), ratio_range
        self.cat_max_ratio, self.hflip, self.photometric = cat_max_ratio, hflip, photometric

    def __call__(self, image: Image.Image, mask: np.ndarray, key: Any
                 ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = sample_rng(self.seed, epoch, index)
        image, mask = self._resize(image, mask, rng)
        image, mask = self._random_crop(image, mask, rng)
        if rng.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            mask = mask[:, ::-1]
        if self.photometric:
            image = photometric_distortion(image, rng)
        pixels = normalize(to_tensor(image), self.mean, self.std)
        target = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        pad_h, pad_w = self.crop[0] - pixels.shape[1], self.crop[1] - pixels.shape[2]
        if pad_h > 0 or pad_w > 0:
            pad = (0, max(0, pad_w), 0, max(0, pad_h))
            pixels = F.pad(pixels, pad, value=0.0)
            target = F.pad(target, pad, value=IGNORE_INDEX)
        return pixels, target

    def _resize(self, image: Image.Image, mask: np.ndarray, rng: np.random.Generator
                ) -> tuple[Image.Image, np.ndarray]:  # fmt: skip
        ratio = rng.uniform(*self.ratio_range)
        long_side, short_side = max(self.scale) * ratio, min(self.scale) * ratio
        width, height = image.size
        factor = min(long_side / max(width, height), short_side / min(width, height))
        size = (max(1, int(width * factor + 0.5)), max(1, int(height * factor + 0.5)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        mask_image = Image.fromarray(mask.astype(np.int32), mode="I")
        mask = np.asarray(mask_image.resize(size, Image.Resampling.NEAREST)).astype(np.int64)
        return image, mask

    def _random_crop(self, image: Image.Image, mask: np.ndarray, rng: np.random.Generator
                     ) -> tuple[Image.Image, np.ndarray]:  # fmt: skip
        height, width = mask.shape
        crop_h, crop_w = min(self.crop[0], height), min(self.crop[1], width)
        top = left = 0
        for _ in range(10):
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            if self.cat_max_ratio >= 1:
                break
            window = mask[top : top + crop_h, left : left + crop_w]
            _, counts = np.unique(window[window != IGNORE_INDEX], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        image = image.crop((left, top, left + crop_w, top + crop_h))
        return image, mask[top : top + crop_h, left : left + crop_w]

    def __repr__(self) -> str:
        return (f"SegmentationTrainTransform(crop {self.crop}, scale {self.scale} x "
                f"{self.ratio_range}, cat_max_ratio {self.cat_max_ratio}, flip {self.hflip}, "
                f"photometric {self.photometric})")  # fmt: skip


def photometric_distortion(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """mmsegmentation's PhotoMetricDistortion, each part with probability 0.5: brightness
    delta 32/255, contrast 0.5-1.5, saturation 0.5-1.5, hue delta 18 degrees."""
    pixels = np.asarray(image, dtype=np.float32)
    if rng.random() < 0.5:
        pixels = pixels + rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        pixels = pixels * rng.uniform(0.5, 1.5)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.5))
    if rng.random() < 0.5:
        hsv = np.asarray(image.convert("HSV")).copy()
        shift = int(rng.integers(-18, 19)) * 256 // 360
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 256
        image = Image.fromarray(hsv, mode="HSV").convert("RGB")
    if not contrast_first and rng.random() < 0.5:
        pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.5, 1.5)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image


# ------------------------------------------------------------------------------- inference
def slide_logits(
    forward: Any, images: torch.Tensor, num_classes: int, crop: int = 512, stride: int = 341
) -> torch.Tensor:
    """mmsegmentation's ``slide`` inference: ``crop``-sized windows every ``stride`` pixels,
    their logits summed and divided by how many windows covered each pixel."""
    if crop < 1 or stride < 1:
        raise UsageError("slide crop and stride must be positive", param="slide")
    batch, _, height, width = images.shape
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    logits = images.new_zeros((batch, num_classes, height, width), dtype=torch.float32)
    counts = images.new_zeros((1, 1, height, width), dtype=torch.float32)
    for row in range(rows):
        for col in range(cols):
            top = min(row * stride, max(height - crop, 0))
            left = min(col * stride, max(width - crop, 0))
            bottom, right = min(top + crop, height), min(left + crop, width)
            window = images[:, :, top:bottom, left:right]
            logits[:, :, top:bottom, left:right] += forward(window).float()
            counts[:, :, top:bottom, left:right] += 1
    return logits / counts
