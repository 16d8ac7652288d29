"""Training augmentation: timm's RandAugment spec and operations, colour jitter, random
erasing, determinism per (seed, epoch, index), and reduced JPEG decoding in training only."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from gfnet_cli.data.augment import TrainTransform, color_jitter, random_erase, sample_rng
from gfnet_cli.data.images import open_image
from gfnet_cli.data.randaugment import (
    RAND_INCREASING_OPS,
    RAND_OPS,
    RandAugment,
    RandAugmentSpec,
    RandAugmentSpecError,
    fill_colour,
)
from gfnet_cli.data.transforms import EvalTransform

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in timm's order
TIMM_RAND = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
             "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
             "TranslateXRel", "TranslateYRel"]  # fmt: skip
TIMM_INCREASING = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                   "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                   "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                   "TranslateXRel", "TranslateYRel"]  # fmt: skip


def _photo(width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 40, (height, width, 3))
    return Image.fromarray(np.clip(gradient * [1, 0.6, 0.3] + noise, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------- the spec
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rand-m9-mstd0.5-inc1", RandAugmentSpec(9, 2, 0.5, 10, True, 0.5)),
        ("rand-m7-n3", RandAugmentSpec(7, 3, 0.0, 10, False, 0.5)),
        ("rand-m15-mmax20-mstd1", RandAugmentSpec(15, 2, 1.0, 20, False, 0.5)),
        ("rand-mstd101", RandAugmentSpec(10, 2, float("inf"), 10, False, 0.5)),
        ("rand-m9-inc0-p0.3", RandAugmentSpec(9, 2, 0.0, 10, False, 0.3)),
        ("rand", RandAugmentSpec()),
    ],
)
def test_spec_parses_timms_form(text, expected):
    assert RandAugmentSpec.parse(text) == expected


@pytest.mark.parametrize("text", ["", "auto-m9", "rand-m", "rand-mX", "rand-w0", "rand-q3",
                                  "rand-n0", "rand-p2"])  # fmt: skip
def test_a_spec_that_does_not_parse_names_the_valid_form(text):
    with pytest.raises(RandAugmentSpecError, match="rand-m<M>"):
        RandAugmentSpec.parse(text)


def test_operation_sets_are_timms_in_timms_order():
    assert [name for name, _ in RAND_OPS] == TIMM_RAND
    assert [name for name, _ in RAND_INCREASING_OPS] == TIMM_INCREASING
    assert RandAugment("rand-m9-inc1").ops is RAND_INCREASING_OPS
    assert RandAugment("rand-m9").ops is RAND_OPS


@pytest.mark.parametrize("name", sorted({n for n, _ in RAND_OPS + RAND_INCREASING_OPS}))
@pytest.mark.parametrize("level", [0.0, 5.0, 10.0, 20.0])
def test_every_operation_keeps_size_and_mode(name, level):
    operation = dict(RAND_OPS + RAND_INCREASING_OPS)[name]
    image = _photo()
    out = operation(image, level, np.random.default_rng(0), (124, 116, 104),
                    Image.Resampling.BICUBIC)  # fmt: skip
    assert out.size == image.size and out.mode == "RGB"


def test_operations_follow_timms_level_mapping():
    ops = dict(RAND_OPS + RAND_INCREASING_OPS)
    image, rng, fill = _photo(), np.random.default_rng(0), (124, 116, 104)

    def apply(name, level):
        return np.asarray(ops[name](image, level, rng, fill, Image.Resampling.BICUBIC))

    assert np.array_equal(apply("Invert", 5), np.asarray(ImageOps.invert(image)))
    # increasing ops at magnitude 0 change nothing; the plain ones are strongest there
    for name in ("SolarizeIncreasing", "ColorIncreasing", "ContrastIncreasing"):
        assert np.array_equal(apply(name, 0), np.asarray(image)), name
    assert np.array_equal(apply("PosterizeIncreasing", 0), np.asarray(ImageOps.posterize(image, 4)))
    assert np.array_equal(apply("Solarize", 10), np.asarray(image))  # threshold 256: none
    assert np.array_equal(apply("Solarize", 0), np.asarray(ImageOps.invert(image)))
    assert np.array_equal(apply("Posterize", 0), np.zeros_like(np.asarray(image)))  # 0 bits
    assert np.array_equal(apply("SolarizeAdd", 0), np.asarray(image))
    for name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
        assert np.array_equal(apply(name, 0), np.asarray(image)), name
    # a translation by 45 % of the width at full magnitude: the fill colour shows on one side
    moved = apply("TranslateXRel", 10)
    left, right = moved[:, :20], moved[:, -20:]
    assert (left == fill).all(axis=-1).any() or (right == fill).all(axis=-1).any()


def test_magnitude_noise_is_gaussian_clipped_to_mmax():
    noisy = RandAugment("rand-m9-mstd0.5")
    rng = np.random.default_rng(0)
    draws = np.array([noisy.magnitude(rng) for _ in range(4000)])
    assert draws.min() >= 0 and draws.max() <= 10
    assert draws.mean() == pytest.approx(9, abs=0.05) and draws.std() == pytest.approx(0.5, 0.1)
    assert RandAugment("rand-m9").magnitude(rng) == 9
    assert RandAugment("rand-m30-mmax20").magnitude(rng) == 20
    uniform = RandAugment("rand-m8-mstd200")
    draws = np.array([uniform.magnitude(rng) for _ in range(2000)])
    assert 0 <= draws.min() < 1 and 7 < draws.max() <= 8


def test_randaugment_draws_only_from_the_generator_it_is_given():
    augment = RandAugment("rand-m9-mstd0.5-inc1", fill=fill_colour([0.485, 0.456, 0.406]))
    assert augment.fill == (124, 116, 104)  # timm's img_mean for ImageNet's mean
    image = _photo()
    first = np.asarray(augment(image, np.random.default_rng(3)))
    np.random.seed(99)  # the global generators must not matter
    torch.manual_seed(99)
    assert np.array_equal(first, np.asarray(augment(image, np.random.default_rng(3))))
    outputs = {np.asarray(augment(image, np.random.default_rng(s))).tobytes() for s in range(8)}
    assert len(outputs) > 4


def test_probability_zero_and_one():
    image = _photo()
    never = RandAugment("rand-m9-p0")
    assert np.array_equal(np.asarray(never(image, np.random.default_rng(0))), np.asarray(image))
    always = RandAugment("rand-m10-n1-p1")
    changed = [not np.array_equal(np.asarray(always(image, np.random.default_rng(s))),
                                  np.asarray(image)) for s in range(10)]  # fmt: skip
    assert sum(changed) >= 8


# ---------------------------------------------------------------------- jitter and erasing
def test_color_jitter_is_seeded_and_off_at_zero():
    image = _photo()
    assert np.array_equal(np.asarray(color_jitter(image, 0.0, np.random.default_rng(0))),
                          np.asarray(image))  # fmt: skip
    a = color_jitter(image, 0.4, np.random.default_rng(1))
    b = color_jitter(image, 0.4, np.random.default_rng(1))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(image))


def test_random_erasing_replaces_one_box_with_normal_noise():
    tensor = torch.zeros(3, 64, 64)
    assert torch.equal(random_erase(tensor.clone(), np.random.default_rng(0), 0.0), tensor)
    for seed in range(20):
        erased = random_erase(torch.zeros(3, 64, 64), np.random.default_rng(seed), 1.0)
        mask = (erased != 0).any(dim=0)
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.02 * 64 * 64 * 0.8 <= area <= 64 * 64 / 3 * 1.2  # timm's (0.02, 1/3)
        assert int(mask.sum()) == int(area)  # one rectangle, every channel
    noise = random_erase(torch.zeros(3, 200, 200), np.random.default_rng(5), 1.0)
    values = noise[noise != 0]
    assert values.mean().abs() < 0.1 and (values.std() - 1).abs() < 0.1


def test_train_transform_pieces_are_a_function_of_seed_epoch_and_index():
    image = _photo(64, 48)
    transform = TrainTransform(32, seed=7, randaugment="rand-m9-mstd0.5-inc1", reprob=0.5,
                               color_jitter=0.4)  # fmt: skip
    assert transform.color_jitter == 0.0  # timm: no colour jitter with RandAugment

    def sample(epoch: int, index: int) -> torch.Tensor:
        transform.reseed(epoch, index)
        return transform(image)

    first = sample(2, 5)
    sample(0, 1)
    assert torch.equal(first, sample(2, 5)) and first.shape == (3, 32, 32)
    assert len({sample(2, i).numpy().tobytes() for i in range(6)}) == 6
    jitter_only = TrainTransform(32, seed=7, color_jitter=0.4)
    assert jitter_only.color_jitter == 0.4


# ---------------------------------------------------------------------- reduced decoding
def _jpeg(image: Image.Image, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def _decode_for(transform: TrainTransform, data: bytes, epoch: int, index: int) -> torch.Tensor:
    transform.reseed(epoch, index)
    image = open_image(data, reduce=transform.decode_reduction)
    return transform(image), image.size


def test_large_jpegs_decode_reduced_for_the_crop_only_where_it_has_the_pixels():
    photo = _photo(1600, 1200, seed=1).resize((1600, 1200), Image.Resampling.BICUBIC)
    data = _jpeg(photo)
    transform = TrainTransform(64, scale=(0.5, 1.0), hflip=0.0, seed=0)
    full = TrainTransform(64, scale=(0.5, 1.0), hflip=0.0, seed=0)
    for index in range(6):
        reduced, size = _decode_for(transform, data, 0, index)
        full.reseed(0, index)
        exact = full(open_image(data))  # no reduce: decoded in full, same box
        assert size[0] <= 800  # the crop is >= 8 x 64 px wide: decoded at 1/2..1/8
        assert (reduced - exact).abs().mean() < 0.05  # normalized units: a few grey levels
    # a crop as large as the output leaves the decoder alone
    tight = TrainTransform(1024, scale=(0.5, 1.0), seed=0)
    _, size = _decode_for(tight, data, 0, 0)
    assert size == (1600, 1200)


def test_reduced_decoding_respects_exif_orientation():
    photo = _photo(1200, 800, seed=2).resize((1200, 800))
    data = _jpeg(photo, orientation=6)  # stored landscape, shown portrait
    transform = TrainTransform(48, scale=(0.9, 1.0), hflip=0.0, seed=0)
    full = TrainTransform(48, scale=(0.9, 1.0), hflip=0.0, seed=0)
    reduced, size = _decode_for(transform, data, 0, 0)
    assert size[1] > size[0]  # upright: portrait
    full.reseed(0, 0)
    exact = full(open_image(data))
    assert (reduced - exact).abs().mean() < 0.05


def test_evaluation_always_decodes_in_full():
    data = _jpeg(_photo(1600, 1200).resize((1600, 1200)))
    assert not hasattr(EvalTransform(64), "decode_reduction")
    assert open_image(data).size == (1600, 1200)


def test_the_box_is_the_same_whether_drawn_before_or_after_decoding():
    photo = _photo(300, 200)
    png = io.BytesIO()
    photo.save(png, format="PNG")
    transform = TrainTransform(32, seed=4, randaugment="rand-m9")
    transform.reseed(1, 2)
    before = transform(open_image(png.getvalue(), reduce=transform.decode_reduction))
    transform.reseed(1, 2)
    after = transform(open_image(png.getvalue()))
    assert torch.equal(before, after)  # PNG: draft is a no-op, the draws are the same
    assert sample_rng(4, 1, 2).random() == sample_rng(4, 1, 2).random()
