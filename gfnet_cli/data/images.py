"""Opening images the way users expect: any file PIL reads, upright, as RGB, bombs refused.

Every failure is an :class:`ImageReadError` with a reason a user understands (missing, empty,
truncated, not an image, too large), so callers can report it and go on with other inputs.
"""

from __future__ import annotations

import glob
import io
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from gfnet_cli.errors import UsageError

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
    ".pnm", ".jfif", ".ico", ".tga", ".avif", ".heic",
}  # fmt: skip

# PIL's default guard (about 89 megapixels; twice that is an error). We treat the warning
# level as an error too: decoding such a file could exhaust memory.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageReadError(UsageError):
    """An input that cannot be used as an image; the message says why.

    ``reason`` is the message without the file name, for reports that show the name already.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


def _error(name: str, reason: str) -> ImageReadError:
    return ImageReadError(f"{name}: {reason}", reason)


def open_image(
    source: str | Path | bytes | dict[str, Any] | Image.Image,
    *,
    reduce: Callable[[int, int], int] | None = None,
) -> Image.Image:
    """Decode ``source`` (a path, bytes, a ``{"path", "bytes"}`` record or a PIL image) to RGB.

    EXIF orientation is applied, transparency is composited on white, high-bit-depth and
    bilevel images are scaled to 8-bit RGB. ``reduce(width, height)``, given the upright size
    before decoding, may return 2, 4 or 8 to have a JPEG decoded at that fraction of its size
    (Pillow's ``draft``; other formats ignore it): the training transform's shortcut for
    photos far larger than its crop.
    """
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(source) or source)
    name, stream = _stream(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise _error(
                        name,
                        f"{width}x{height} pixels exceeds the {MAX_IMAGE_PIXELS:,}-pixel "
                        "limit (possible decompression bomb); refusing to decode it",
                    )
                if reduce is not None:
                    _draft(image, reduce)
                image.load()
                upright = ImageOps.exif_transpose(image) or image
                return to_rgb(upright)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _error(
            name, "too many pixels (possible decompression bomb); refusing to decode it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _error(name, decode_failure(exc, "image")) from None
    finally:
        stream.close()


# EXIF orientations that swap width and height (transpose, rotations by 90 and 270 degrees).
_SWAPPED_ORIENTATIONS = {5, 6, 7, 8}


def _draft(image: Image.Image, reduce: Callable[[int, int], int]) -> None:
    """Ask the JPEG decoder for ``1 / reduce(upright size)`` of the image (no-op elsewhere)."""
    width, height = image.size
    if image.getexif().get(0x0112) in _SWAPPED_ORIENTATIONS:
        width, height = height, width
    factor = int(reduce(width, height))
    if factor > 1:
        image.draft(None, (image.width // factor, image.height // factor))


def _stream(source: str | Path | bytes | dict[str, Any]) -> tuple[str, io.BufferedIOBase]:
    if source is None:  # a dataset row whose image cell is empty
        raise ImageReadError("no image (the value is empty)")
    if isinstance(source, dict):
        if source.get("bytes"):
            return str(source.get("path") or "<image bytes>"), io.BytesIO(source["bytes"])
        if source.get("path"):
            source = source["path"]
        else:
            raise ImageReadError("an image record holds neither bytes nor a path")
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise _error("<image bytes>", "empty")
        return "<image bytes>", io.BytesIO(bytes(source))
    path = Path(source)
    if not path.exists():
        reason = "broken symbolic link" if path.is_symlink() else "no such file"
        raise _error(str(path), reason)
    if path.is_dir():
        raise _error(str(path), "is a folder, not an image")
    try:
        if path.stat().st_size == 0:
            raise _error(str(path), "empty file")
        return str(path), open(path, "rb")  # noqa: SIM115 - closed by open_image
    except PermissionError:
        raise _error(str(path), "permission denied") from None
    except OSError as exc:
        raise _error(str(path), f"unreadable ({exc.strerror or exc})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, correctly (not just ``convert("RGB")``)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "1":
        return image.convert("L").convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), mode)).convert("RGB")
    return image.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV: PIL's conversions are right


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    values = array.astype(np.float64)
    if mode == "F":
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        values = values * scale
    elif mode.startswith("I;16") or (values.size and values.max() > 255):
        values = values / 257.0  # 16-bit range to 8-bit
    return np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Files as given; folders searched recursively by image extension; glob patterns expanded.

    Order is kept (folder contents sorted). Anything that matches nothing is kept as given,
    so the caller reports it as missing instead of silently dropping it.
    """
    expanded: list[str] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and is_image_file(p))
            expanded.extend(found)
        elif not path.exists() and glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            files = [m for m in matches if Path(m).is_file()]
            expanded.extend(files if files else [text])
        else:
            expanded.append(str(path) if text.startswith("~") else text)
    return expanded


# Never let PIL silently pad a truncated file with grey: it must be reported.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode_failure(exc: BaseException, what: str) -> str:
    """Why Pillow could not decode a file, in words (``what``: "image", "mask")."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (or a format Pillow cannot read)"
    text = str(exc)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated {what} file"
    return f"unreadable {what} ({text.splitlines()[0] if text else type(exc).__name__})"
