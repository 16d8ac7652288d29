"""Training augmentation with PIL and numpy only: random-resized-crop, flip, colour jitter,
RandAugment (:mod:`gfnet_cli.data.randaugment`) and random erasing, in timm's order.

Randomness is never drawn from global state: every sample's random numbers come from a
generator seeded with ``(seed, epoch, index)``. The same sample in the same epoch is therefore
augmented identically whichever DataLoader worker decodes it, and a resumed run sees exactly
the images the interrupted one would have seen.

The crop box is drawn before the image is decoded (:meth:`TrainTransform.decode_reduction`),
so a JPEG far larger than the crop is decoded at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``)
when the crop still has at least the output's pixels there: most of the decoding time of a
large photo saved, for pixels the resize would have averaged away anyway. Only training uses
it; the evaluation transform always decodes in full.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance

from gfnet_cli.data.datasets import TorchImageDataset
from gfnet_cli.data.randaugment import RandAugment, fill_colour
from gfnet_cli.data.transforms import normalize, pil_interpolation, to_tensor
from gfnet_cli.models.config import GFNetConfig, to_pair

logger = logging.getLogger(__name__)

# The ImageNet default (0.08, 1) crops tiny, often object-free regions: on small images and
# small datasets it costs accuracy (docs/training.md has the measurements behind 0.6).
DEFAULT_CROP_SCALE = (0.6, 1.0)
DEFAULT_CROP_RATIO = (3 / 4, 4 / 3)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample of one epoch: independent of workers and global state."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = DEFAULT_CROP_SCALE,
    ratio: tuple[float, float] = DEFAULT_CROP_RATIO,
) -> tuple[int, int, int, int]:
    """A (left, top, right, bottom) box covering ``scale`` of the area at aspect ``ratio``.

    torchvision's rule: ten tries at a random area and log-uniform aspect, then the central
    crop at the nearest allowed aspect.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def color_jitter(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation each by a factor in [1 - s, 1 + s], in random order.

    torchvision's ``ColorJitter(s, s, s)`` on PIL images (what timm's ``--color-jitter s``
    builds): the same ``ImageEnhance`` operations and factor ranges.
    """
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    for which in rng.permutation(len(enhancers)):
        image = enhancers[int(which)](image).enhance(float(rng.uniform(low, high)))
    return image


def random_erase(
    tensor: torch.Tensor,
    rng: np.random.Generator,
    probability: float,
    area: tuple[float, float] = (0.02, 1 / 3),
    min_aspect: float = 0.3,
) -> torch.Tensor:
    """timm's ``RandomErasing(mode="pixel")`` on one normalized (C, H, W) image, in place.

    With ``probability``, one box of ``area`` of the image (aspect log-uniform in
    [``min_aspect``, 1 / ``min_aspect``]; ten tries) is replaced by standard-normal noise per
    pixel, which is what noise looks like after normalization.
    """
    if rng.random() > probability:
        return tensor
    channels, height, width = tensor.shape
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for _ in range(10):
        target = rng.uniform(*area) * height * width
        aspect = math.exp(rng.uniform(*log_aspect))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            noise = rng.standard_normal((channels, h, w), dtype=np.float32)
            tensor[:, top : top + h, left : left + w] = torch.from_numpy(noise)
            break
    return tensor


class TrainTransform:
    """Random-resized-crop to the model's input size, flip, colour jitter or RandAugment,
    normalize, random erasing: timm's training transform, in timm's order.

    As in timm, ``color_jitter`` applies only without ``randaugment`` (RandAugment has its own
    colour operations). Picklable for DataLoader workers. Call :meth:`reseed` before each
    sample (the training datasets do) so the randomness is a function of
    ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int],
        *,
        scale: tuple[float, float] = DEFAULT_CROP_SCALE,
        ratio: tuple[float, float] = DEFAULT_CROP_RATIO,
        hflip: float = 0.5,
        interpolation: str = "bicubic",
        mean: Any = (0.485, 0.456, 0.406),
        std: Any = (0.229, 0.224, 0.225),
        seed: int = 0,
        randaugment: str | None = None,
        color_jitter: float = 0.0,
        reprob: float = 0.0,
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.size = to_pair(img_size)
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), float(hflip)
        self.resample = pil_interpolation(interpolation)
        self.mean, self.std = list(mean), list(std)
        self.seed = int(seed)
        self.randaugment = (
            RandAugment(randaugment, fill=fill_colour(self.mean), resample=self.resample)
            if randaugment
            else None
        )
        self.color_jitter = 0.0 if self.randaugment is not None else float(color_jitter)
        if color_jitter and self.randaugment is not None:
            logger.info("color_jitter is not applied with randaugment (timm's rule)")
        self.reprob = float(reprob)
        self.rng = sample_rng(self.seed, 0, 0)
        self._pending: tuple[int, int, tuple[int, int, int, int]] | None = None

    def reseed(self, epoch: int, index: int) -> None:
        self.rng = sample_rng(self.seed, epoch, index)
        self._pending = None

    def decode_reduction(self, width: int, height: int) -> int:
        """Draw this sample's crop box for a ``width`` x ``height`` image before decoding it,
        and return how much a JPEG decoder may shrink it (1, 2, 4 or 8): the largest factor
        that leaves the box at least the output size. Used by the dataset's decoder."""
        box = random_resized_crop_box(width, height, self.rng, self.scale, self.ratio)
        self._pending = (width, height, box)
        out_height, out_width = self.size
        box_width, box_height = box[2] - box[0], box[3] - box[1]
        for factor in (8, 4, 2):
            if box_width >= factor * out_width and box_height >= factor * out_height:
                return factor
        return 1

    def _crop_box(self, image: Image.Image) -> tuple[float, float, float, float]:
        """The crop box in ``image``'s pixels: the one drawn before decoding, scaled to the
        reduced decode if there was one, else drawn now."""
        pending, self._pending = self._pending, None
        if pending is None:
            return random_resized_crop_box(image.width, image.height, self.rng, self.scale,
                                           self.ratio)  # fmt: skip
        width, height, box = pending
        if image.size == (width, height):
            return box
        factor = round(width / image.width)  # Pillow's draft: ceil(size / factor) pixels
        if factor < 1 or image.size != (-(-width // factor), -(-height // factor)):
            scale_x, scale_y = image.width / width, image.height / height
        else:
            scale_x = scale_y = 1 / factor
        left, top, right, bottom = box
        return left * scale_x, top * scale_y, right * scale_x, bottom * scale_y

    def __call__(self, image: Image.Image) -> torch.Tensor:
        box = self._crop_box(image)
        height, width = self.size
        image = image.resize((width, height), self.resample, box=box)
        if self.rng.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.color_jitter > 0:
            image = color_jitter(image, self.color_jitter, self.rng)
        if self.randaugment is not None:
            image = self.randaugment(image, self.rng)
        tensor = normalize(to_tensor(image), self.mean, self.std)
        if self.reprob > 0:
            tensor = random_erase(tensor, self.rng, self.reprob)
        return tensor

    def __repr__(self) -> str:
        extras = "".join(
            f", {name}={value}"
            for name, value in (("randaugment", self.randaugment and self.randaugment.spec),
                                ("color_jitter", self.color_jitter), ("reprob", self.reprob))
            if value
        )  # fmt: skip
        return (
            f"TrainTransform(size={self.size}, scale={self.scale}, hflip={self.hflip}, "
            f"interpolation={self.resample.name.lower()}{extras})"
        )


def train_transform(
    config: GFNetConfig,
    *,
    seed: int,
    scale: tuple[float, float] = DEFAULT_CROP_SCALE,
    hflip: float = 0.5,
    randaugment: str | None = None,
    color_jitter: float = 0.0,
    reprob: float = 0.0,
) -> TrainTransform:
    """The training transform for ``config`` (its input size, interpolation, mean, std)."""
    return TrainTransform(
        config.image_size,
        scale=scale,
        hflip=hflip,
        interpolation=config.interpolation,
        mean=config.mean,
        std=config.std,
        seed=seed,
        randaugment=randaugment,
        color_jitter=color_jitter,
        reprob=reprob,
    )


class EpochSampleDataset(TorchImageDataset):
    """A :class:`TorchImageDataset` indexed by ``(epoch, index)`` pairs.

    The sampler says which epoch a sample belongs to, so the augmentation of a sample depends
    only on ``(seed, epoch, index)``, never on which worker or how many samples came before.
    """

    def __getitem__(self, key: Any) -> tuple:  # type: ignore[override]
        epoch, index = key if isinstance(key, (tuple, list)) else (0, key)
        if hasattr(self.transform, "reseed"):
            self.transform.reseed(int(epoch), int(index))
        return super().__getitem__(int(index))
