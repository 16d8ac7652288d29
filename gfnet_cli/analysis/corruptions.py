"""The 15 common corruptions of ImageNet-C (Hendrycks & Dietterich, ICLR 2019), on the fly.

Written with numpy and PIL after the authors' ``make_imagenet_c.py``, with its parameters per
severity, so that any dataset can be corrupted at the model's input size, deterministically
given a seed. The authors' script needs OpenCV, scikit-image, scipy and ImageMagick (Wand); the
packaged port (``imagecorruptions``) no longer imports on current Python. docs/analysis.md says
what follows the original exactly and what cannot:

- At 224 x 224 (ImageNet-C's size) every parameter is the original's. The pixel-space primitives
  are re-implemented: OpenCV's ``filter2D``/``GaussianBlur`` (reflect-101 borders), scipy's
  ``gaussian_filter``, ``zoom`` (order 1) and ``map_coordinates`` (order 1); tests compare them
  with scipy where it is installed.
- **motion blur** (and the streaks of **snow**) used ImageMagick's ``motion_blur``: here its
  kernel is computed as ImageMagick's ``MotionBlurImage`` computes it (a one-sided Gaussian of
  ``2*ceil(radius)+1`` taps along the angle, edge pixels repeated), in floating point.
- **frost** blended crops of six photographs of frost that are not part of any package: pass
  ``frost_textures=`` a folder holding them (the original files from the ImageNet-C repository)
  for the original corruption; otherwise a procedural frost (ice needles and branches over a
  fractal haze) stands in, whose errors are not comparable with published frost errors.
- The original saved each corrupted image as a JPEG of quality 85 and evaluated those files;
  :func:`corrupt` does the same round trip in memory (``save_quality=None`` skips it).
- Other sizes: parameters measured in pixels (blur radii and sigmas, glass-blur displacements,
  elastic displacement fields) scale with ``min(height, width) / 224``; overlays that are
  images of their own (snow, frost, fog) are drawn at 224 px on the shorter side with the
  original parameters and resized to the image. Relative parameters (noise levels, zoom
  factors, pixelation factors, JPEG qualities, contrast, brightness) are unchanged. At sizes
  far below 224 the mildest blurs shrink below a pixel and approach the identity.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gfnet_cli.errors import UsageError

REFERENCE_SIZE = 224  # ImageNet-C's image size: the parameters below are for it
SEVERITIES = (1, 2, 3, 4, 5)
SAVE_QUALITY = 85  # make_imagenet_c.py saved every corrupted image as a JPEG of this quality

# AlexNet's error on each ImageNet-C corruption, averaged over the five severities
# (Hendrycks & Dietterich 2019): the denominators of the mean corruption error (mCE).
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
CORRUPTIONS = tuple(ALEXNET_ERRORS)  # ImageNet-C's order: noise, blur, weather, digital
GROUPS = {
    "noise": CORRUPTIONS[0:3],
    "blur": CORRUPTIONS[3:7],
    "weather": CORRUPTIONS[7:11],
    "digital": CORRUPTIONS[11:15],
}


def parse_corruptions(spec: str | Sequence[str] | None) -> list[str]:
    """Corruption names from ``"all"``, group names (``noise``, ``blur``...) or a list."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (str(i).strip().lower().replace("-", "_") for i in items):
        if not item or item == "none":
            continue
        if item == "all":
            names.extend(CORRUPTIONS)
        elif item in GROUPS:
            names.extend(GROUPS[item])
        elif item in CORRUPTIONS:
            names.append(item)
        else:
            raise UsageError(
                f"unknown corruption {item!r}: expected all, a group ({', '.join(GROUPS)}) or "
                f"names from {', '.join(CORRUPTIONS)}",
                param="corruptions",
            )
    return list(dict.fromkeys(names))


def check_severity(severity: int) -> int:
    if isinstance(severity, bool) or int(severity) != severity or severity not in SEVERITIES:
        raise UsageError(f"severities must be 1 to 5, got {severity!r}", param="severities")
    return int(severity)


def corrupt(
    image: np.ndarray | Image.Image,
    name: str,
    severity: int,
    *,
    seed: int | Sequence[int] = 0,
    frost_textures: str | Path | None = None,
    save_quality: int | None = SAVE_QUALITY,
) -> np.ndarray:
    """``image`` (RGB, uint8 HxWx3 or PIL) with corruption ``name`` at ``severity`` 1-5.

    Deterministic: the same ``seed`` (an int or a sequence of ints, e.g. ``(seed, index)``)
    gives the same pixels. The severities of one image share their random draws (the same
    noise, the same fog), so a severity curve measures the severity alone. Returns uint8
    HxWx3, quantized as the original saved its images.
    """
    return corrupt_severities(
        image,
        name,
        [severity],
        seed=seed,
        frost_textures=frost_textures,
        save_quality=save_quality,
    )[0]


def corrupt_severities(
    image: np.ndarray | Image.Image,
    name: str,
    severities: Sequence[int],
    *,
    seed: int | Sequence[int] = 0,
    frost_textures: str | Path | None = None,
    save_quality: int | None = SAVE_QUALITY,
) -> list[np.ndarray]:
    """:func:`corrupt` at several severities, equal to calling it once per severity, but
    textures shared by the severities are made once."""
    if name not in CORRUPTIONS:
        parse_corruptions([name])  # raises the usage error naming the choices
    levels = [check_severity(s) for s in severities]
    pixels = _as_rgb_array(image)
    seeds = [seed] if isinstance(seed, int) else list(seed)
    height, width = pixels.shape[:2]
    scale = min(height, width) / REFERENCE_SIZE
    cache: dict = {}
    results = []
    for severity in levels:
        # the severity is not part of the seed: every severity starts from the same draws
        rng = np.random.default_rng([CORRUPTIONS.index(name), *seeds])
        context = _Context(rng, scale, frost_textures, cache)
        result = _FUNCTIONS[name](pixels.astype(np.float64), severity - 1, context)
        corrupted = np.uint8(np.clip(result, 0, 255))  # truncation, as the original's np.uint8
        if save_quality is not None:
            corrupted = _jpeg_round_trip(corrupted, save_quality)
        results.append(corrupted)
    return results


class _Context:
    """What a corruption needs besides the image: its random generator and the size scale."""

    def __init__(
        self,
        rng: np.random.Generator,
        scale: float,
        frost: str | Path | None,
        cache: dict | None = None,
    ) -> None:
        self.rng = rng
        self.scale = scale  # min(height, width) / 224
        self.frost = frost
        self.cache = {} if cache is None else cache  # overlays shared by an image's severities

    def overlay_shape(self, height: int, width: int) -> tuple[int, int]:
        """The size an overlay is drawn at: 224 px on the shorter side, or the image's own."""
        factor = max(1.0, 1.0 / self.scale)
        return (round(height * factor), round(width * factor))

    @property
    def overlay_scale(self) -> float:
        """Pixel parameters of overlays: the original's at 224 px, scaled above it."""
        return max(1.0, self.scale)


def _as_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise UsageError(f"corrupt needs an RGB image (H, W, 3), got shape {array.shape}")
    if array.dtype != np.uint8:
        raise UsageError(f"corrupt needs uint8 pixels, got {array.dtype}")
    return array


def _jpeg_round_trip(pixels: np.ndarray, quality: int, **options) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality), **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float image (H, W) or (H, W, C) to another size: area average down, bicubic up."""
    if array.shape[:2] == (height, width):
        return array
    shrinking = height <= array.shape[0] and width <= array.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    planes = array[..., None] if array.ndim == 2 else array
    resized = [
        np.asarray(
            Image.fromarray(planes[..., c].astype(np.float32), mode="F").resize(
                (width, height), method
            )
        )
        for c in range(planes.shape[2])
    ]
    out = np.stack(resized, axis=-1).astype(np.float64)
    return out[..., 0] if array.ndim == 2 else out


# ------------------------------------------------------------------------ filtering primitives
def _reflect_index(index: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Indices outside [0, size) folded back: ``reflect101`` (OpenCV's default, d c b | a b c d
    ...), ``symmetric`` (scipy's ``reflect``: c b a | a b c) or ``nearest`` (a a | a b c)."""
    if mode == "nearest" or size == 1:
        return np.clip(index, 0, size - 1)
    if mode == "reflect101":
        period = 2 * (size - 1)
        index = np.mod(index, period)
        return np.where(index >= size, period - index, index)
    period = 2 * size
    index = np.mod(index, period)
    return np.where(index >= size, period - 1 - index, index)


def _correlate1d(array: np.ndarray, weights: np.ndarray, axis: int, mode: str) -> np.ndarray:
    """``out[i] = sum_j w[j] * array[i + j - r]`` along ``axis``, borders folded by ``mode``."""
    radius = len(weights) // 2
    size = array.shape[axis]
    source = _reflect_index(np.arange(-radius, size + radius), size, mode)
    padded = np.take(array, source, axis=axis)
    if len(weights) > 64:  # long kernels (elastic's sigma of 170 px): FFT along the axis
        n = padded.shape[axis] + len(weights)
        spectrum = np.fft.rfft(padded, n, axis=axis)
        shape = [1] * array.ndim
        shape[axis] = -1
        kernel = np.fft.rfft(weights[::-1], n).reshape(shape)
        full = np.fft.irfft(spectrum * kernel, n, axis=axis)
        return np.take(full, np.arange(len(weights) - 1, len(weights) - 1 + size), axis=axis)
    out = np.zeros_like(array, dtype=np.float64)
    for offset, weight in enumerate(weights):
        if weight != 0:
            out += weight * np.take(padded, np.arange(offset, offset + size), axis=axis)
    return out


def _correlate2d(image: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """OpenCV's ``filter2D`` per channel (correlation, centred anchor), borders by ``mode``."""
    rows, cols = kernel.shape
    ry, rx = rows // 2, cols // 2
    height, width = image.shape[:2]
    ys = _reflect_index(np.arange(-ry, height + ry), height, mode)
    xs = _reflect_index(np.arange(-rx, width + rx), width, mode)
    padded = image[ys][:, xs]
    if kernel.size > 49:  # large disks: one FFT product instead of hundreds of shifted sums
        shape = (padded.shape[0] + rows, padded.shape[1] + cols)
        spectrum = np.fft.rfft2(padded, shape, axes=(0, 1))
        flipped = np.fft.rfft2(kernel[::-1, ::-1], shape)
        full = np.fft.irfft2(spectrum * flipped[:, :, None], shape, axes=(0, 1))
        return full[rows - 1 : rows - 1 + height, cols - 1 : cols - 1 + width]
    out = np.zeros(image.shape, dtype=np.float64)
    for dy in range(rows):
        for dx in range(cols):
            if kernel[dy, dx] != 0:
                out += kernel[dy, dx] * padded[dy : dy + height, dx : dx + width]
    return out


def _gaussian_weights(sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * x**2 / sigma**2)
    return weights / weights.sum()


def gaussian_filter(
    image: np.ndarray, sigma: float, *, mode: str = "nearest", truncate: float = 4.0
) -> np.ndarray:
    """scipy's ``ndimage.gaussian_filter`` over the first two axes (as scikit-image's
    ``gaussian(..., multichannel=True)`` calls it); ``mode`` as :func:`_reflect_index`."""
    if sigma <= 0:
        return image.astype(np.float64)
    radius = int(truncate * float(sigma) + 0.5)
    weights = _gaussian_weights(sigma, radius)
    out = _correlate1d(image.astype(np.float64), weights, 0, mode)
    return _correlate1d(out, weights, 1, mode)


def _cv2_gaussian_blur(image: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    """OpenCV's ``GaussianBlur`` with an odd ``ksize`` and ``sigma > 0`` (reflect-101 borders)."""
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    weights = np.exp(-(x**2) / (2 * max(sigma, 1e-12) ** 2))
    weights /= weights.sum()
    out = _correlate1d(image.astype(np.float64), weights, 0, "reflect101")
    return _correlate1d(out, weights, 1, "reflect101")


def zoom_bilinear(image: np.ndarray, zoom: float) -> np.ndarray:
    """scipy's ``ndimage.zoom(image, (zoom, zoom, 1), order=1)`` (grid_mode False)."""
    out = image.astype(np.float64)
    for axis in (0, 1):
        size = out.shape[axis]
        new = int(round(size * zoom))
        step = (size - 1) / (new - 1) if new > 1 else 0.0
        coords = np.arange(new) * step
        low = np.clip(np.floor(coords).astype(np.int64), 0, size - 1)
        high = np.clip(low + 1, 0, size - 1)
        frac = (coords - low).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, low, axis=axis) * (1 - frac) + np.take(out, high, axis=axis) * frac
    return out


def _clipped_zoom(image: np.ndarray, zoom: float) -> np.ndarray:
    """Zoom into the centre by ``zoom`` >= 1, keeping the size (the original's clipped_zoom,
    per axis so that non-square images work)."""
    height, width = image.shape[:2]
    crop_h, crop_w = int(np.ceil(height / zoom)), int(np.ceil(width / zoom))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    zoomed = zoom_bilinear(image[top : top + crop_h, left : left + crop_w], zoom)
    trim_top, trim_left = (zoomed.shape[0] - height) // 2, (zoomed.shape[1] - width) // 2
    return zoomed[trim_top : trim_top + height, trim_left : trim_left + width]


def bilinear_sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, mode: str) -> np.ndarray:
    """``image`` (H, W, C) at fractional positions ``rows``/``cols`` (H, W), borders by ``mode``
    (scipy's ``map_coordinates(order=1, mode="reflect")`` is ``symmetric``)."""
    height, width = image.shape[:2]
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    ra, rb = _reflect_index(r0, height, mode), _reflect_index(r0 + 1, height, mode)
    ca, cb = _reflect_index(c0, width, mode), _reflect_index(c0 + 1, width, mode)
    top = image[ra, ca] * (1 - fc) + image[ra, cb] * fc
    bottom = image[rb, ca] * (1 - fc) + image[rb, cb] * fc
    return top * (1 - fr) + bottom * fr


def motion_blur_kernel(radius: float, sigma: float, angle: float) -> list[tuple[float, int, int]]:
    """ImageMagick's ``MotionBlurImage`` kernel: ``(weight, dx, dy)`` per tap.

    ``2*ceil(radius)+1`` taps of a one-sided Gaussian, placed along ``angle`` (degrees) at
    offsets rounded the way ImageMagick rounds them.
    """
    width = int(2 * math.ceil(radius) + 1) if radius > 1e-12 else 1
    sigma = max(abs(sigma), 1e-12)
    taps = np.exp(-(np.arange(width, dtype=np.float64) ** 2) / (2 * sigma * sigma))
    taps /= taps.sum()
    point_x = width * math.sin(math.radians(angle))
    point_y = width * math.cos(math.radians(angle))
    norm = math.hypot(point_x, point_y)
    return [
        (
            float(taps[i]),
            math.ceil(i * point_y / norm - 0.5),
            math.ceil(i * point_x / norm - 0.5),
        )
        for i in range(width)
    ]


def motion_blur_image(image: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """``out(x, y) = sum_i w_i * in(x + dx_i, y + dy_i)``, edge pixels repeated (ImageMagick's
    default virtual pixels)."""
    height, width = image.shape[:2]
    kernel = motion_blur_kernel(radius, sigma, angle)
    reach = max(max(abs(dx), abs(dy)) for _, dx, dy in kernel)
    pad = [(reach, reach), (reach, reach)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image.astype(np.float64), pad, mode="edge")
    out = np.zeros(image.shape, dtype=np.float64)
    for weight, dx, dy in kernel:
        out += weight * padded[reach + dy : reach + dy + height, reach + dx : reach + dx + width]
    return out


def plasma_fractal(
    rng: np.random.Generator, mapsize: int = 256, wibbledecay: float = 3
) -> np.ndarray:
    """The original's diamond-square height map, values in [0, 1] (``mapsize``: a power of 2)."""
    maparray = np.zeros((mapsize, mapsize), dtype=np.float64)
    stepsize = mapsize
    wibble = 100.0

    def wibbled_mean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=0)
        squares += np.roll(squares, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbled_mean(squares)
        centres = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        left = (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1))
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbled_mean(left)
        top = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbled_mean(top)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


# ----------------------------------------------------------------------------------- noise
def _gaussian_noise(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    c = [0.08, 0.12, 0.18, 0.26, 0.38][level]
    x = x / 255.0
    return np.clip(x + ctx.rng.normal(size=x.shape, scale=c), 0, 1) * 255


def _shot_noise(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    c = [60, 25, 12, 5, 3][level]
    x = x / 255.0
    return np.clip(ctx.rng.poisson(x * c) / c, 0, 1) * 255


def _impulse_noise(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    # scikit-image's random_noise(mode="s&p", amount=c): each value flips with probability
    # c, to white or black with equal odds
    c = [0.03, 0.06, 0.09, 0.17, 0.27][level]
    x = x / 255.0
    flipped = ctx.rng.random(x.shape) < c
    salted = ctx.rng.random(x.shape) < 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return np.clip(x, 0, 1) * 255


# ------------------------------------------------------------------------------------ blur
def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The original's anti-aliased disk kernel (zero border rows and columns trimmed)."""
    if radius <= 8:
        grid = np.arange(-8, 8 + 1)
        ksize = 3
    else:
        grid = np.arange(-math.ceil(radius), math.ceil(radius) + 1)
        ksize = 5
    xs, ys = np.meshgrid(grid, grid)
    disk = np.array((xs**2 + ys**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    kernel = _cv2_gaussian_blur(disk.astype(np.float64), ksize, alias_blur)
    while kernel.shape[0] > 1 and not kernel[0].any() and not kernel[:, 0].any():
        kernel = kernel[1:-1, 1:-1]
    return kernel


def _defocus_blur(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    radius, alias = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][level]
    kernel = _disk(radius * ctx.scale, alias * ctx.scale)
    return np.clip(_correlate2d(x / 255.0, kernel, "reflect101"), 0, 1) * 255


def _glass_blur(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][
        level
    ]
    sigma *= ctx.scale
    delta = int(round(delta * ctx.scale))
    x = np.uint8(gaussian_filter(x / 255.0, sigma) * 255)
    if delta > 0:
        x = _shuffle_locally(x, delta, iterations, ctx.rng)
    return np.clip(gaussian_filter(x / 255.0, sigma), 0, 1) * 255


def _shuffle_locally(x: np.ndarray, delta: int, iterations: int, rng: np.random.Generator):
    """The original's local pixel "swaps", in its order (bottom-right to top-left).

    The original writes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on a numpy image: both
    right-hand sides are views, so pixel (h, w) takes the value of (h', w') and (h', w') keeps
    its own (a copy, not a swap). That is what ImageNet-C holds, so it is what we do: tracked
    as source indices, applied to the pixels once.
    """
    height, width = x.shape[:2]
    positions = [
        h * width + w
        for h in range(height - delta, delta, -1)
        for w in range(width - delta, delta, -1)
    ]
    source = list(range(height * width))
    for _ in range(iterations):
        offsets = rng.integers(-delta, delta, size=(len(positions), 2)).tolist()
        for position, (dx, dy) in zip(positions, offsets, strict=True):
            source[position] = source[position + dy * width + dx]
    return x.reshape(height * width, -1)[source].reshape(x.shape)


def _motion_blur(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][level]
    angle = ctx.rng.uniform(-45, 45)
    blurred = motion_blur_image(x, radius * ctx.scale, sigma * ctx.scale, angle)
    return np.clip(np.round(blurred), 0, 255)  # ImageMagick returned 8-bit pixels


def _zoom_blur(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    zooms = [
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02),
        np.arange(1, 1.31, 0.03),
    ][level]
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x, dtype=np.float64)
    for zoom in zooms:
        out += _clipped_zoom(x, zoom)
    x = (x + out) / (len(zooms) + 1)
    return np.clip(x, 0, 1) * 255


# --------------------------------------------------------------------------------- weather
def _snow(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    c = [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ][level]
    height, width = x.shape[:2]
    x = x.astype(np.float32) / 255.0
    shape = ctx.overlay_shape(height, width)
    flakes = ctx.rng.normal(size=shape, loc=c[0], scale=c[1])
    flakes = _clipped_zoom(flakes[..., None], c[2] * ctx.overlay_scale)[..., 0]
    flakes[flakes < c[3]] = 0
    flakes = np.clip(flakes, 0, 1) * 255
    flakes = flakes.astype(np.uint8).astype(np.float64)  # the original went through a PNG
    angle = ctx.rng.uniform(-135, -45)
    scale = ctx.overlay_scale
    flakes = np.round(motion_blur_image(flakes, c[4] * scale, c[5] * scale, angle)) / 255.0
    flakes = _resize(flakes, height, width)[..., None]
    grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, k=2), 0, 1) * 255


def _frost(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    weight_image, weight_frost = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][level]
    height, width = x.shape[:2]
    shape = ctx.overlay_shape(height, width)
    key = ("frost", ctx.frost, height, width)
    frost = ctx.cache.get(key)
    if frost is None:  # the same texture for every severity of an image (shared draws)
        if ctx.frost is not None:
            frost = _frost_crop(Path(ctx.frost), shape, ctx.rng)
        else:
            frost = procedural_frost(shape, ctx.rng)
        frost = ctx.cache[key] = _resize(frost, height, width)
    return np.clip(weight_image * x + weight_frost * frost, 0, 255)


def _frost_crop(folder: Path, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of one of the original frost photographs (frost1.png ... frost6.jpg)."""
    files = sorted(
        p for p in folder.glob("frost*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")
    )
    if not files:
        raise UsageError(
            f"frost_textures {folder} holds no frost*.png/jpg images", param="frost_textures"
        )
    # the original drew np.random.randint(5): the first five of its six files
    path = files[int(rng.integers(min(5, len(files))))]
    with Image.open(path) as opened:
        texture = opened.convert("RGB")
    height, width = shape
    factor = max(height / texture.height, width / texture.width, 1.0)
    if factor > 1:  # smaller than the crop: enlarge it first
        size = (math.ceil(texture.width * factor), math.ceil(texture.height * factor))
        texture = texture.resize(size, Image.Resampling.BICUBIC)
    array = np.asarray(texture, dtype=np.float64)
    top = int(rng.integers(0, array.shape[0] - height + 1))
    left = int(rng.integers(0, array.shape[1] - width + 1))
    return array[top : top + height, left : left + width]


def procedural_frost(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A stand-in for the original's frost photographs (RGB, 0-255): patches of fine ice
    crystals (needles with side branches at 60 degrees, drawn at twice the resolution and
    averaged down so they stay thin) and frost grain over a fractal haze, bluish white, about
    40 % mean intensity. Its statistics are not the photographs'."""
    height, width = shape
    mapsize = 1 << max(8, math.ceil(math.log2(max(height, width))))
    haze = plasma_fractal(rng, mapsize, wibbledecay=1.8)[:height, :width]
    density = np.clip((haze - 0.25) / 0.6, 0, 1)  # where frost has formed
    canvas = Image.new("L", (2 * width, 2 * height))
    draw = ImageDraw.Draw(canvas)
    for _ in range(max(12, height * width // 40)):
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        if rng.random() > density[int(y), int(x)]:
            continue
        angle = float(rng.uniform(0, 2 * math.pi))
        _frost_needle(draw, rng, 2 * x, 2 * y, angle, 2 * float(rng.exponential(7) + 3), 2)
    needles = np.asarray(canvas.resize((width, height), Image.Resampling.BOX), np.float64) / 255
    grain = gaussian_filter(rng.random((height, width)), 0.7)
    grain = np.clip((grain - grain.mean()) * 4 + 0.5, 0, 1)
    intensity = 0.12 + 0.3 * haze + density * (0.35 * grain + 0.9 * needles)
    tint = np.array([0.88, 0.94, 1.0])
    return np.clip(np.clip(intensity, 0, 1)[..., None] * tint * 255.0, 0, 255)


def _frost_needle(draw, rng, x: float, y: float, angle: float, length: float, depth: int):
    end_x, end_y = x + length * math.cos(angle), y + length * math.sin(angle)
    draw.line([(x, y), (end_x, end_y)], fill=int(rng.integers(120, 256)), width=1)
    if depth == 0:
        return
    for _ in range(int(rng.integers(1, 4))):
        along = float(rng.uniform(0.2, 0.9))
        side = float(rng.choice([-1.0, 1.0])) * math.pi / 3
        _frost_needle(
            draw,
            rng,
            x + along * (end_x - x),
            y + along * (end_y - y),
            angle + side,
            length * float(rng.uniform(0.3, 0.55)),
            depth - 1,
        )


def _fog(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    strength, decay = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][level]
    height, width = x.shape[:2]
    x = x / 255.0
    max_val = x.max()
    rows, cols = ctx.overlay_shape(height, width)
    mapsize = 1 << max(8, math.ceil(math.log2(max(rows, cols))))
    fog = plasma_fractal(ctx.rng, mapsize, decay)[:rows, :cols]
    x = x + strength * _resize(fog, height, width)[..., None]
    return np.clip(x * max_val / (max_val + strength), 0, 1) * 255


# --------------------------------------------------------------------------------- digital
def _brightness(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    # the original adds c to the HSV value channel: same hue and saturation, so every
    # channel scales by new value / old value (black pixels become grey c)
    c = [0.1, 0.2, 0.3, 0.4, 0.5][level]
    x = x / 255.0
    value = x.max(axis=2, keepdims=True)
    brighter = np.clip(value + c, 0, 1)
    ratio = np.divide(brighter, value, out=np.zeros_like(value), where=value > 0)
    out = np.where(value > 0, x * ratio, brighter)
    return np.clip(out, 0, 1) * 255


def _contrast(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    c = [0.4, 0.3, 0.2, 0.1, 0.05][level]
    x = x / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def _elastic_transform(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    # 244 should have been 224 in the original, "but ultimately nothing is incorrect"
    alpha, sigma, affine = (
        244 * ctx.scale * k
        for k in [
            (2, 0.7, 0.1),
            (2, 0.08, 0.2),
            (0.05, 0.01, 0.02),
            (0.07, 0.01, 0.02),
            (0.12, 0.01, 0.02),
        ][level]
    )
    image = (x / 255.0).astype(np.float32).astype(np.float64)
    height, width = image.shape[:2]
    image = _random_affine(image, affine, ctx.rng)
    dx = (
        gaussian_filter(
            ctx.rng.uniform(-1, 1, size=(height, width)), sigma, mode="symmetric", truncate=3
        )
        * alpha
    )
    dy = (
        gaussian_filter(
            ctx.rng.uniform(-1, 1, size=(height, width)), sigma, mode="symmetric", truncate=3
        )
        * alpha
    )
    dx, dy = dx.astype(np.float32), dy.astype(np.float32)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    warped = bilinear_sample(image, rows + dy, cols + dx, "symmetric")
    return np.clip(warped, 0, 1) * 255


def _random_affine(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """The original's random affine: three points moved by up to ``amount``, OpenCV's
    ``getAffineTransform`` + ``warpAffine`` (bilinear, reflect-101 borders)."""
    height, width = image.shape[:2]
    centre = np.float32((height, width)) // 2
    size = min(height, width) // 3
    source = np.float32([centre + size, [centre[0] + size, centre[1] - size], centre - size])
    target = source + rng.uniform(-amount, amount, size=source.shape).astype(np.float32)
    # the affine map taking the source points to the target points, in (x, y) coordinates
    ones = np.ones((3, 1))
    forward = np.linalg.solve(np.hstack([source, ones]).astype(np.float64), target)  # (3, 2)
    matrix = np.vstack([forward.T, [0, 0, 1]])
    inverse = np.linalg.inv(matrix)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    src_x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
    src_y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
    return bilinear_sample(image, src_y, src_x, "reflect101")


def _pixelate(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    c = [0.6, 0.5, 0.4, 0.3, 0.25][level]
    height, width = x.shape[:2]
    image = Image.fromarray(np.uint8(x))
    small = image.resize((max(1, int(width * c)), max(1, int(height * c))), Image.Resampling.BOX)
    return np.asarray(small.resize((width, height), Image.Resampling.BOX), dtype=np.float64)


def _jpeg_compression(x: np.ndarray, level: int, ctx: _Context) -> np.ndarray:
    quality = [25, 18, 15, 10, 7][level]
    return _jpeg_round_trip(np.uint8(x), quality).astype(np.float64)


_FUNCTIONS: dict[str, Callable[[np.ndarray, int, _Context], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
