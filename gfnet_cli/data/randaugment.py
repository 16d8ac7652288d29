"""RandAugment as timm's ``rand_augment_transform`` defines it, with PIL and numpy only.

The spec is timm's: ``rand`` followed by dash-separated settings, e.g. ``rand-m9-mstd0.5-inc1``
(the authors' recipe, from DeiT):

- ``mM``     magnitude, 0-10 on timm's scale (default 10)
- ``nN``     operations applied to each image (default 2), drawn with replacement
- ``mstdS``  standard deviation of the Gaussian noise added to the magnitude at each application
             (``mstd`` above 100: the magnitude is drawn uniformly from [0, M])
- ``mmaxX``  upper bound of the noisy magnitude (default 10)
- ``incI``   1: the "increasing" operation set, whose strength grows with the magnitude
- ``pP``     probability of each drawn operation being applied (default 0.5)

Each operation is applied with probability ``p``; its magnitude is ``M`` plus Gaussian noise of
std ``S``, clipped to [0, ``mmax``], mapped to the operation's argument exactly as timm does
(rotate up to 30 degrees, shear up to 0.3, translate up to 45 % of the side, enhance factors
in [0.1, 1.9], ...; rotations, shears and translations are negated with probability 0.5),
bicubic resampling and the dataset's mean colour as fill.

Differences from timm, on purpose: randomness comes from the caller's ``numpy`` generator (the
training transform's per-sample generator, seeded by ``(seed, epoch, index)``), never from the
global ``random`` module, so a resumed run augments every sample exactly as before; and
``inc0`` selects the plain set (timm reads any ``inc`` value as "on"). The ``w`` (weighted
choice) setting is not supported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

SPEC_FORM = "rand-m<M>[-n<N>][-mstd<S>][-mmax<X>][-inc<0|1>][-p<P>], e.g. rand-m9-mstd0.5-inc1"
_LEVEL_DENOM = 10.0  # timm's magnitude scale: M = 10 is an operation's full strength


class RandAugmentSpecError(ValueError):
    """A RandAugment spec that does not parse; the message gives the valid form."""


@dataclass(frozen=True)
class RandAugmentSpec:
    """A parsed ``rand-...`` spec (see the module docstring for each setting)."""

    magnitude: float = 10.0
    num_ops: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = _LEVEL_DENOM
    increasing: bool = False
    prob: float = 0.5

    @classmethod
    def parse(cls, text: str) -> RandAugmentSpec:
        """``rand-m9-mstd0.5-inc1`` -> RandAugmentSpec(magnitude=9, magnitude_std=0.5, ...)."""
        parts = str(text).strip().split("-")
        if parts[0] != "rand":
            raise RandAugmentSpecError(
                f"RandAugment spec {text!r} must start with 'rand': {SPEC_FORM}"
            )
        values: dict[str, float | int | bool] = {}
        for part in parts[1:]:
            key, number = _split(part, text)
            values.update(_setting(key, number, text))
        spec = cls(**values)
        spec._check(text)
        return spec

    def _check(self, text: str) -> None:
        if self.num_ops < 1 or not 0 <= self.prob <= 1 or self.magnitude < 0:
            raise RandAugmentSpecError(
                f"RandAugment spec {text!r}: n must be >= 1, p in [0, 1], m >= 0 ({SPEC_FORM})"
            )


def _split(part: str, text: str) -> tuple[str, str]:
    match = re.fullmatch(r"([a-z]+)(\d.*)", part)
    if match is None:
        raise RandAugmentSpecError(
            f"RandAugment spec {text!r}: cannot read {part!r}; the form is {SPEC_FORM}"
        )
    return match.group(1), match.group(2)


def _setting(key: str, number: str, text: str) -> dict[str, float | int | bool]:
    try:
        if key == "m":
            return {"magnitude": float(number)}
        if key == "n":
            return {"num_ops": int(number)}
        if key == "mstd":
            std = float(number)
            return {"magnitude_std": float("inf") if std > 100 else std}
        if key == "mmax":
            return {"magnitude_max": float(number)}
        if key == "inc":
            return {"increasing": int(number) != 0}
        if key == "p":
            return {"prob": float(number)}
    except ValueError:
        pass
    else:
        raise RandAugmentSpecError(
            f"RandAugment spec {text!r}: unknown setting {key!r}; the form is {SPEC_FORM}"
        )
    raise RandAugmentSpecError(
        f"RandAugment spec {text!r}: {key}{number} is not a number; the form is {SPEC_FORM}"
    )


# ---------------------------------------------------------------------- the operations
# Each takes (image, level in [0, mmax], rng, fill, resample) and returns an image.
Operation = Callable[[Image.Image, float, np.random.Generator, tuple, int], Image.Image]


def _negated(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() > 0.5 else value  # timm's _randomly_negate


def _affine(image: Image.Image, matrix: tuple, fill: tuple, resample: int) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=resample,
                           fillcolor=fill)  # fmt: skip


def _shear_x(image, level, rng, fill, resample):
    factor = _negated(level / _LEVEL_DENOM * 0.3, rng)
    return _affine(image, (1, factor, 0, 0, 1, 0), fill, resample)


def _shear_y(image, level, rng, fill, resample):
    factor = _negated(level / _LEVEL_DENOM * 0.3, rng)
    return _affine(image, (1, 0, 0, factor, 1, 0), fill, resample)


def _translate_x(image, level, rng, fill, resample):
    pixels = _negated(level / _LEVEL_DENOM * 0.45, rng) * image.size[0]
    return _affine(image, (1, 0, pixels, 0, 1, 0), fill, resample)


def _translate_y(image, level, rng, fill, resample):
    pixels = _negated(level / _LEVEL_DENOM * 0.45, rng) * image.size[1]
    return _affine(image, (1, 0, 0, 0, 1, pixels), fill, resample)


def _rotate(image, level, rng, fill, resample):
    degrees = _negated(level / _LEVEL_DENOM * 30.0, rng)
    return image.rotate(degrees, resample=resample, fillcolor=fill)


def _auto_contrast(image, level, rng, fill, resample):
    return ImageOps.autocontrast(image)


def _equalize(image, level, rng, fill, resample):
    return ImageOps.equalize(image)


def _invert(image, level, rng, fill, resample):
    return ImageOps.invert(image)


def _posterize_bits(level: float) -> int:
    return int(level / _LEVEL_DENOM * 4)


def _keep_bits(image: Image.Image, bits: int) -> Image.Image:
    """Keep the ``bits`` most significant bits of each channel (0: black), as PIL's
    posterize did before it refused 0 bits."""
    mask = ~(2 ** (8 - max(0, min(bits, 8))) - 1) & 0xFF
    return image.point([i & mask for i in range(256)] * len(image.getbands()))


def _posterize(image, level, rng, fill, resample):
    bits = _posterize_bits(level)  # keep 0..4 bits: stronger as the magnitude falls
    return image if bits >= 8 else _keep_bits(image, bits)


def _posterize_increasing(image, level, rng, fill, resample):
    return _keep_bits(image, 4 - _posterize_bits(level))  # keep 4..0 bits


def _solarize(image, level, rng, fill, resample):
    return ImageOps.solarize(image, int(level / _LEVEL_DENOM * 256))


def _solarize_increasing(image, level, rng, fill, resample):
    return ImageOps.solarize(image, 256 - int(level / _LEVEL_DENOM * 256))


def _solarize_add(image, level, rng, fill, resample):
    add = int(level / _LEVEL_DENOM * 110)
    table = [min(255, i + add) if i < 128 else i for i in range(256)]
    return image.point(table * len(image.getbands()))


def _enhancer(enhance: type, increasing: bool) -> Operation:
    def apply(image, level, rng, fill, resample):
        if increasing:  # 1 (no change) moving away toward 0.1 or 1.9 as the magnitude grows
            factor = max(0.1, 1.0 + _negated(level / _LEVEL_DENOM * 0.9, rng))
        else:  # 0.1 .. 1.9 as the magnitude grows
            factor = level / _LEVEL_DENOM * 1.8 + 0.1
        return enhance(image).enhance(factor)

    return apply


_GEOMETRY_AND_LEVELS: list[tuple[str, Operation]] = [
    ("AutoContrast", _auto_contrast),
    ("Equalize", _equalize),
    ("Invert", _invert),
    ("Rotate", _rotate),
]
_TAIL: list[tuple[str, Operation]] = [
    ("SolarizeAdd", _solarize_add),
]
_SHAPES: list[tuple[str, Operation]] = [
    ("ShearX", _shear_x),
    ("ShearY", _shear_y),
    ("TranslateXRel", _translate_x),
    ("TranslateYRel", _translate_y),
]
_ENHANCE = [
    ("Color", ImageEnhance.Color),
    ("Contrast", ImageEnhance.Contrast),
    ("Brightness", ImageEnhance.Brightness),
    ("Sharpness", ImageEnhance.Sharpness),
]

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in timm's order (the order matters:
# an operation is drawn by its index).
RAND_OPS: list[tuple[str, Operation]] = [
    *_GEOMETRY_AND_LEVELS,
    ("Posterize", _posterize),
    ("Solarize", _solarize),
    *_TAIL,
    *[(name, _enhancer(kind, increasing=False)) for name, kind in _ENHANCE],
    *_SHAPES,
]
RAND_INCREASING_OPS: list[tuple[str, Operation]] = [
    *_GEOMETRY_AND_LEVELS,
    ("PosterizeIncreasing", _posterize_increasing),
    ("SolarizeIncreasing", _solarize_increasing),
    *_TAIL,
    *[(f"{name}Increasing", _enhancer(kind, increasing=True)) for name, kind in _ENHANCE],
    *_SHAPES,
]


class RandAugment:
    """Apply ``spec.num_ops`` random operations to an RGB image (picklable for workers)."""

    def __init__(self, spec: RandAugmentSpec | str, *, fill: tuple[int, int, int] = (124, 116, 104),
                 resample: int = Image.Resampling.BICUBIC) -> None:  # fmt: skip
        self.spec = RandAugmentSpec.parse(spec) if isinstance(spec, str) else spec
        self.ops = RAND_INCREASING_OPS if self.spec.increasing else RAND_OPS
        self.fill = tuple(int(v) for v in fill)
        self.resample = int(resample)

    def magnitude(self, rng: np.random.Generator) -> float:
        """One application's magnitude: M plus the spec's noise, clipped to [0, mmax]."""
        spec = self.spec
        magnitude = spec.magnitude
        if spec.magnitude_std == float("inf"):
            magnitude = rng.uniform(0, magnitude)
        elif spec.magnitude_std > 0:
            magnitude = rng.normal(magnitude, spec.magnitude_std)
        return max(0.0, min(float(magnitude), spec.magnitude_max))

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        for index in rng.choice(len(self.ops), self.spec.num_ops, replace=True):
            if self.spec.prob < 1.0 and rng.random() > self.spec.prob:
                continue
            _, operation = self.ops[int(index)]
            image = operation(image, self.magnitude(rng), rng, self.fill, self.resample)
        return image

    def __repr__(self) -> str:
        return f"RandAugment({self.spec})"


def fill_colour(mean: list[float] | tuple[float, ...]) -> tuple[int, int, int]:
    """The fill of rotations and shears: the normalization mean as 8-bit RGB (timm's img_mean)."""
    return tuple(min(255, round(255 * value)) for value in mean)  # type: ignore[return-value]
