"""Segmentation masks: PNGs of class indices in, class indices out, one fixed palette.

A mask holds one class index per pixel, as ADE20K, Cityscapes and Hub datasets such as
scene_parse_150 store them: 8-bit grayscale (mode ``L``), palette images (mode ``P``, whose
indices are the classes and whose colours are ignored) or 16-bit grayscale for more than 256
classes. Index 255 marks pixels no loss or metric counts (:data:`IGNORE_INDEX`, as in
mmsegmentation and ``evaluate``'s ``mean_iou``).

ADE20K's masks use 0 for "other objects" and 1..150 for the classes; ``reduce_labels``
(mmsegmentation's ``reduce_zero_label``) ignores the 0 and shifts the classes to 0..149.

Masks are read as stored: no EXIF rotation, no colour conversion, no resampling (a mask is
resized with nearest-neighbour only, by whoever pairs it with its image).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from gfnet_cli.data.images import MAX_IMAGE_PIXELS, ImageReadError, _stream, decode_failure

#: the label of pixels that count for nothing (loss, metrics)
IGNORE_INDEX = 255
#: PIL modes a mask may have: 1-bit, 8-bit, palette indices, 16- and 32-bit integers
MASK_MODES = ("1", "L", "P", "I;16", "I;16L", "I;16B", "I")


class MaskReadError(ImageReadError):
    """A mask that cannot be used: unreadable, or not class indices (e.g. an RGB picture)."""


def open_mask(source: str | Path | bytes | dict[str, Any] | Image.Image) -> np.ndarray:
    """The class indices of a mask as an (H, W) integer array, exactly as stored.

    ``source`` is a path, bytes, a ``{"path", "bytes"}`` record (a Hub dataset's image cell)
    or a PIL image. Modes ``L`` and ``P`` give uint8, 16-bit PNGs uint16, mode ``I`` int32.
    Colour masks (RGB) are refused: their pixels are colours, not class indices.
    """
    if isinstance(source, Image.Image):
        return _indices(source, "<mask>")
    name, stream = _stream(source)
    try:
        with Image.open(stream) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _mask_error(
                    name, f"{width}x{height} pixels exceeds the {MAX_IMAGE_PIXELS:,}-pixel limit"
                )
            image.load()
            return _indices(image, name)
    except ImageReadError as exc:
        if isinstance(exc, MaskReadError):
            raise
        raise _mask_error(name, exc.reason) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _mask_error(name, decode_failure(exc, "mask")) from None
    finally:
        stream.close()


def _mask_error(name: str, reason: str) -> MaskReadError:
    return MaskReadError(f"{name}: {reason}", reason)


def _indices(image: Image.Image, name: str) -> np.ndarray:
    mode = image.mode
    if mode not in MASK_MODES:
        raise _mask_error(
            name,
            f"a mode-{mode} image is not a mask of class indices: masks are PNGs of mode L, P "
            "or 16-bit grayscale, one class index per pixel",
        )
    array = np.asarray(image)
    if mode == "1":
        return array.astype(np.uint8)
    if mode.startswith("I;16"):
        return array.astype(np.uint16)  # big- or little-endian in the file, native here
    if mode == "I":
        if array.size and array.min() < 0:
            raise _mask_error(name, f"holds negative values ({int(array.min())})")
        return array.astype(np.int32)
    return np.array(array, dtype=np.uint8)  # L, P: a writable copy


def reduce_labels(mask: np.ndarray) -> np.ndarray:
    """ADE20K's convention, as mmsegmentation's ``reduce_zero_label``: 0 ("other") becomes
    :data:`IGNORE_INDEX`, 1..N become 0..N-1, 255 stays ignored."""
    values = np.asarray(mask)
    reduced = values.astype(np.int32) - 1
    reduced[(values == 0) | (values == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced.astype(values.dtype if values.dtype != np.bool_ else np.uint8)


# --------------------------------------------------------------------------- colours
@lru_cache(maxsize=1)
def _palette_table() -> tuple[int, ...]:
    """256 RGB triples from the bits of the index (the PASCAL VOC colour map's rule)."""
    table: list[int] = []
    for index in range(256):
        red = green = blue = 0
        code = index
        for bit in range(8):
            red |= ((code >> 0) & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        table += [red, green, blue]
    return tuple(table)


def palette() -> list[int]:
    """The fixed palette of every mask PNG ``gfnet`` writes: 768 values, RGB per index.

    Class 0 is black, neighbouring indices get distinct colours, 255 (ignored) is light
    grey-beige; the same colours in every file, whatever the dataset.
    """
    return list(_palette_table())


def colorize(mask: np.ndarray) -> np.ndarray:
    """A (H, W) mask as an (H, W, 3) uint8 picture in :func:`palette` colours (index mod 256)."""
    table = np.asarray(_palette_table(), dtype=np.uint8).reshape(256, 3)
    return table[np.asarray(mask).astype(np.int64) % 256]


def mask_image(mask: np.ndarray) -> Image.Image:
    """A (H, W) mask of class indices as a PIL image to save as PNG.

    Indices up to 255 give a palette image (mode ``P``: viewers show colours, readers get the
    indices back); larger ones a 16-bit grayscale image (no palette can hold them).
    """
    values = np.asarray(mask)
    if values.ndim != 2:
        raise ValueError(f"a mask is a 2-D array of class indices, got shape {values.shape}")
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError("mask values must be class indices between 0 and 65535")
    if not values.size or values.max() <= 255:
        image = Image.fromarray(values.astype(np.uint8))  # mode L
        image.putpalette(palette())  # L -> P, the values kept as indices
        return image
    return Image.fromarray(values.astype(np.uint16))
