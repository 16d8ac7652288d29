"""Image preprocessing driven by the model's config, without torchvision.

The evaluation transform is the authors' exactly: resize the shorter side to
``int(img_size / crop_pct)`` with PIL bicubic, center-crop, scale to [0, 1], normalize.
Its pixel-space variant (:func:`pixel_transform`) stops before normalizing: adversarial
attacks and image corruptions work on [0, 1] pixels and normalize inside the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from gfnet_cli.models.config import GFNetConfig, crop_size_to_resize, to_pair

INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def pil_interpolation(name: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown interpolation {name!r}: choose one of {', '.join(INTERPOLATIONS)}"
        ) from None


def resize_shorter_side(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """Scale so the shorter side is ``size``, keeping the aspect ratio (torchvision's rule)."""
    width, height = image.size
    new_width, new_height = _shorter_side_size(width, height, size)
    if (new_width, new_height) == (width, height):
        return image
    return image.resize((new_width, new_height), resample)


def _shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _resize_for_crop(
    image: Image.Image, size: int, crop: tuple[int, int], resample: Image.Resampling
) -> Image.Image:
    """``resize_shorter_side``, but an extremely elongated image is resized only where the
    center crop will look.

    Resizing a 100000x1 strip's shorter side to ``size`` would allocate gigabytes for pixels
    the crop throws away. PIL's ``box`` resizes just the crop's window of the long side at
    the same scale (the same pixels, within 2 grey levels of the full resize). Images less
    than 16 times as long as wide, every ordinary photo, take the plain, exact path.
    """
    width, height = image.size
    new_width, new_height = _shorter_side_size(width, height, size)
    crop_height, crop_width = crop
    if max(new_width, new_height) <= 16 * max(size, *crop):
        return resize_shorter_side(image, size, resample)
    if new_height > new_width:  # PIL's box is exact only along x: work on the transpose
        flipped = image.transpose(Image.Transpose.TRANSPOSE)
        resized = _resize_for_crop(flipped, size, (crop_width, crop_height), resample)
        return resized.transpose(Image.Transpose.TRANSPOSE)
    left = int(round((new_width - crop_width) / 2.0))
    scale = width / new_width
    box = (left * scale, 0, (left + crop_width) * scale, height)
    return image.resize((crop_width, new_height), resample, box=box)


def center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Crop the central ``(height, width)``; pad with black if the image is smaller."""
    crop_height, crop_width = size
    width, height = image.size
    if crop_width > width or crop_height > height:
        padded = Image.new(image.mode, (max(width, crop_width), max(height, crop_height)))
        padded.paste(image, ((padded.width - width) // 2, (padded.height - height) // 2))
        image, (width, height) = padded, padded.size
    top = int(round((height - crop_height) / 2.0))
    left = int(round((width - crop_width) / 2.0))
    return image.crop((left, top, left + crop_width, top + crop_height))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """HWC uint8 RGB to CHW float in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def normalize(tensor: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return (tensor - mean_t) / std_t


class EvalTransform:
    """The authors' evaluation transform for a model config (picklable for DataLoader workers).

    ``normalized=False`` stops at [0, 1] pixels (the same resize and crop, no mean/std).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int],
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        mean: Any = (0.485, 0.456, 0.406),
        std: Any = (0.229, 0.224, 0.225),
        normalized: bool = True,
    ) -> None:
        self.crop = to_pair(img_size)
        self.resize = crop_size_to_resize(min(self.crop), crop_pct)
        self.resample = pil_interpolation(interpolation)
        self.mean, self.std = list(mean), list(std)
        self.normalized = normalized

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = _resize_for_crop(image, self.resize, self.crop, self.resample)
        image = center_crop(image, self.crop)
        pixels = to_tensor(image)
        return normalize(pixels, self.mean, self.std) if self.normalized else pixels

    def __repr__(self) -> str:
        return (
            f"EvalTransform(resize={self.resize}, crop={self.crop}, "
            f"interpolation={self.resample.name.lower()}"
            + ("" if self.normalized else ", normalized=False")
            + ")"
        )


def eval_transform(
    config: GFNetConfig, img_size: int | tuple[int, int] | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation transform for ``config`` (optionally at another ``img_size``)."""
    return EvalTransform(
        img_size if img_size is not None else config.image_size,
        crop_pct=config.crop_pct,
        interpolation=config.interpolation,
        mean=config.mean,
        std=config.std,
    )


def pixel_transform(
    config: GFNetConfig, img_size: int | tuple[int, int] | None = None
) -> EvalTransform:
    """The evaluation transform up to [0, 1] pixels: the same resize and crop, not normalized.

    ``normalize(pixel_transform(c)(image), c.mean, c.std)`` equals ``eval_transform(c)(image)``.
    """
    return EvalTransform(
        img_size if img_size is not None else config.image_size,
        crop_pct=config.crop_pct,
        interpolation=config.interpolation,
        mean=config.mean,
        std=config.std,
        normalized=False,
    )
