"""Training augmentation: random-resized-crop + horizontal flip, with PIL and numpy only.

Randomness is never drawn from global state: every sample's random numbers come from a
generator seeded with ``(seed, epoch, index)``. The same sample in the same epoch is therefore
augmented identically whichever DataLoader worker decodes it, and a resumed run sees exactly
the images the interrupted one would have seen.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from gfnet_cli.data.datasets import TorchImageDataset
from gfnet_cli.data.transforms import normalize, pil_interpolation, to_tensor
from gfnet_cli.models.config import GFNetConfig, to_pair

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


class TrainTransform:
    """Random-resized-crop to the model's input size, horizontal flip, normalize.

    Picklable for DataLoader workers. Call :meth:`reseed` before each sample (the training
    dataset does) so the randomness is a function of ``(seed, epoch, index)``.
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
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.size = to_pair(img_size)
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), float(hflip)
        self.resample = pil_interpolation(interpolation)
        self.mean, self.std = list(mean), list(std)
        self.seed = int(seed)
        self.rng = sample_rng(self.seed, 0, 0)

    def reseed(self, epoch: int, index: int) -> None:
        self.rng = sample_rng(self.seed, epoch, index)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        box = random_resized_crop_box(image.width, image.height, self.rng, self.scale, self.ratio)
        height, width = self.size
        image = image.resize((width, height), self.resample, box=box)
        if self.rng.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return normalize(to_tensor(image), self.mean, self.std)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(size={self.size}, scale={self.scale}, hflip={self.hflip}, "
            f"interpolation={self.resample.name.lower()})"
        )


def train_transform(
    config: GFNetConfig,
    *,
    seed: int,
    scale: tuple[float, float] = DEFAULT_CROP_SCALE,
    hflip: float = 0.5,
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
