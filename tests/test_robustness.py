"""``robustness`` and ``gfnet robustness``: attacks and corruptions on a tiny GFNet trained on
the digits demo data (scripts/export_digits.py), the corruption primitives against scipy,
and the command's contract."""

from __future__ import annotations

import colorsys
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils._python_dispatch import TorchDispatchMode

from gfnet_cli import GFNetConfig, create_model, save_model
from gfnet_cli.analysis.attacks import PixelModel, fgsm, input_gradient, pgd
from gfnet_cli.analysis.corruptions import (
    ALEXNET_ERRORS,
    CORRUPTIONS,
    bilinear_sample,
    corrupt,
    corrupt_severities,
    gaussian_filter,
    motion_blur_kernel,
    parse_corruptions,
    plasma_fractal,
    zoom_bilinear,
)
from gfnet_cli.analysis.robustness import robustness
from gfnet_cli.errors import UsageError
from gfnet_cli.labels import imagenet_class_names, imagenet_synsets
from gfnet_cli.models import layers
from tests.conftest import assert_one_line_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from export_digits import export_digits  # noqa: E402

EPSILONS = [0.0, 2 / 255, 8 / 255, 24 / 255]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids contention (30x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load_split(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for folder in sorted(root.iterdir()):
        for path in sorted(folder.glob("*.png")):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(int(folder.name))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return pixels, torch.tensor(labels)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits demo data at 16 px, and a GFNet trained on it (about 95 % test top-1)."""
    root = tmp_path_factory.mktemp("digits")
    export_digits(root / "digits", size=16)
    torch.manual_seed(0)
    config = GFNetConfig(
        patch_size=4, embed_dim=64, depth=1, img_size=16, crop_pct=1.0, num_classes=10,
        class_names=[str(i) for i in range(10)],
    )  # fmt: skip
    model = create_model(config)
    pixels, labels = _load_split(root / "digits" / "train")
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(10):
        order = torch.randperm(len(pixels), generator=generator)
        for start in range(0, len(pixels), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(model((pixels[batch] - mean) / std), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    folder = save_model(model, root / "model")
    return {"model": folder, "data": root / "digits", "net": model}


@pytest.fixture(scope="module")
def curve(digits):
    """One run with a curve of budgets and a few corruptions, shared by the tests below."""
    return robustness(
        str(digits["model"]), str(digits["data"]), split="test", epsilons=EPSILONS,
        corruptions="gaussian_noise,contrast", max_samples=180, batch_size=60, num_workers=0,
    )  # fmt: skip


def _test_batch(digits, count=48):
    pixels, labels = _load_split(digits["data"] / "test")
    picked = torch.arange(0, len(labels), len(labels) // count)[:count]
    net = digits["net"]
    return PixelModel(net, net.config.mean, net.config.std).eval(), pixels[picked], labels[picked]


# ------------------------------------------------------------------------------- attacks
def test_the_model_learned_the_digits(curve):
    assert curve.num_samples == 180
    assert curve.clean_top1 >= 0.85


def test_fgsm_at_zero_is_clean_accuracy_exactly(curve):
    fgsm_zero = next(r for r in curve.attacks if r.attack == "fgsm" and r.epsilon == 0)
    assert fgsm_zero.top1 == curve.clean_top1


def test_accuracy_falls_with_the_budget_and_pgd_is_stronger(curve):
    for attack in ("fgsm", "pgd"):
        rows = sorted((r for r in curve.attacks if r.attack == attack), key=lambda r: r.epsilon)
        assert [r.epsilon for r in rows] == EPSILONS
        top1 = [r.top1 for r in rows]
        assert all(a >= b for a, b in zip(top1, top1[1:], strict=False)), (attack, top1)
        assert top1[-1] < curve.clean_top1 - 0.2, (attack, top1)  # the attacks do bite
    fgsm_rows = {r.epsilon: r.top1 for r in curve.attacks if r.attack == "fgsm"}
    for row in (r for r in curve.attacks if r.attack == "pgd"):
        assert row.top1 <= fgsm_rows[row.epsilon], row
        assert row.steps == 5 and row.step_size == pytest.approx(row.epsilon / 2)


@pytest.mark.parametrize("epsilon", [1 / 255, 8 / 255, 0.5])
def test_adversarial_images_stay_within_epsilon_and_in_range(digits, epsilon):
    model, images, labels = _test_batch(digits)
    images[:4] = torch.where(images[:4] > 0.5, 1.0, 0.0)  # pixels at both ends of the range
    candidates = {
        "fgsm": fgsm(model, images, labels, epsilon),
        "pgd": pgd(model, images, labels, epsilon, steps=3),
        "pgd-random": pgd(model, images, labels, epsilon, steps=2, random_start=True,
                          generator=torch.Generator().manual_seed(0)),
    }  # fmt: skip
    for name, adversarial in candidates.items():
        assert (adversarial - images).abs().max() <= epsilon + 1e-6, name
        assert adversarial.min() >= 0 and adversarial.max() <= 1, name
        assert (adversarial != images).any(), name


def test_pgd_lowers_the_loss_at_every_step(digits):
    model, images, labels = _test_batch(digits)
    losses = []
    for steps in (1, 2, 4):
        adversarial = pgd(model, images, labels, 4 / 255, steps=steps)
        with torch.no_grad():
            losses.append(F.cross_entropy(model(adversarial), labels).item())
    with torch.no_grad():
        clean = F.cross_entropy(model(images), labels).item()
    assert clean < losses[0] < losses[1] < losses[2]


class _OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_attacks_never_take_the_fused_inference_path(digits):
    model, images, labels = _test_batch(digits, count=8)
    if layers._HAS_ONEDNN_LINEAR:  # control: plain inference does take it here
        with _OpLog() as log, torch.inference_mode():
            model(images)
        assert "mkldnn._linear_pointwise" in log.ops
    with _OpLog() as log:
        gradient = input_gradient(model, images, labels)
        fgsm(model, images, labels, 1 / 255)
        pgd(model, images, labels, 1 / 255, steps=2)
    assert not any(op.startswith("mkldnn.") for op in log.ops), sorted(log.ops)
    assert any("fft" in op for op in log.ops)  # the gradient went through the global filter
    assert gradient.abs().sum() > 0 and torch.isfinite(gradient).all()
    # the same gradient as the plain path with the fused one disabled by hand
    with layers.fused_inference(False), torch.enable_grad():
        x = images.clone().requires_grad_(True)
        F.cross_entropy(model(x), labels, reduction="sum").backward()
    torch.testing.assert_close(gradient, x.grad)


def test_bad_attack_settings_are_refused_before_loading(digits):
    for kwargs, param in [
        ({"epsilons": [-0.1]}, "epsilons"),
        ({"epsilons": [1.5]}, "epsilons"),
        ({"pgd_steps": 0}, "pgd_steps"),
        ({"pgd_step_size": 0.0}, "pgd_step_size"),
        ({"attacks": "cw"}, "attacks"),
        ({"corruptions": "rain"}, "corruptions"),
        ({"corruptions": "all", "severities": [0]}, "severities"),
    ]:
        with pytest.raises(UsageError) as caught:
            robustness("no-such-model", "no-such-dataset", **kwargs)
        assert caught.value.param == param, kwargs


# ---------------------------------------------------------------------------- corruptions
def _photo(seed: int, size: int = 64) -> np.ndarray:
    """A photo-like image: fractal colour fields and a few discs."""
    rng = np.random.default_rng(seed)
    planes = [plasma_fractal(rng, 64, 2.0)[:size, :size] for _ in range(3)]
    image = Image.fromarray((np.stack(planes, -1) * 200 + 20).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.integers(0, size, 2)
        width = int(rng.integers(size // 8, size // 2))
        draw.ellipse([x, y, x + width, y + width], fill=tuple(map(int, rng.integers(0, 256, 3))))
    return np.asarray(image)


def _distances(name: str, images: list[np.ndarray]) -> np.ndarray:
    """Root-mean-square pixel distance from the original, per severity, averaged."""
    total = np.zeros(5)
    for seed, image in enumerate(images):
        for level, corrupted in enumerate(corrupt_severities(image, name, range(1, 6), seed=seed)):
            total[level] += np.sqrt(((corrupted.astype(float) - image) ** 2).mean())
    return total / len(images)


# ImageNet-C's own parameters do not move pixels monotonically for these (docs/analysis.md):
# glass blur's severities 2 and 4 shuffle fewer times than 1 and 3, frost's 4 weighs the image
# less but the frost no more than 3, pixelate's 0.6 and 0.5 factors resample unevenly, and
# elastic's severities 1-2 are large smooth warps, 3-5 small local ones.
NOT_MONOTONE = {"glass_blur", "frost", "pixelate", "elastic_transform"}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_severity_moves_images_further_from_the_original(name):
    distances = _distances(name, [_photo(seed) for seed in range(3)])
    if name in NOT_MONOTONE:
        assert distances.min() > 1.0, distances  # every severity changes the image
        if name != "elastic_transform":
            assert distances[4] > distances[0], distances
    else:
        assert all(a < b for a, b in zip(distances, distances[1:], strict=False)), distances


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_are_deterministic_and_run_at_the_digits_size(name):
    image = _photo(7, size=16)
    first = corrupt_severities(image, name, [1, 3, 5], seed=(4, 2))
    again = corrupt_severities(image, name, [1, 3, 5], seed=(4, 2))
    for a, b in zip(first, again, strict=True):
        assert a.dtype == np.uint8 and a.shape == (16, 16, 3)
        np.testing.assert_array_equal(a, b)
    # one severity alone gives what it gives among others
    np.testing.assert_array_equal(corrupt(image, name, 3, seed=(4, 2)), first[1])
    non_square = corrupt(_photo(8, size=48)[:32], name, 5, seed=1)  # 32 x 48
    assert non_square.shape == (32, 48, 3)


def test_random_corruptions_differ_between_seeds():
    image = _photo(1)
    for name in ("gaussian_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
                 "elastic_transform"):  # fmt: skip
        a, b = corrupt(image, name, 3, seed=0), corrupt(image, name, 3, seed=1)
        assert (a != b).any(), name


def test_corruption_names_groups_and_errors():
    assert parse_corruptions("all") == list(CORRUPTIONS)
    assert parse_corruptions("noise, contrast") == [
        "gaussian_noise", "shot_noise", "impulse_noise", "contrast",
    ]  # fmt: skip
    assert parse_corruptions(None) == [] and parse_corruptions("none") == []
    assert parse_corruptions("jpeg-compression") == ["jpeg_compression"]
    with pytest.raises(UsageError, match="unknown corruption 'rain'"):
        parse_corruptions("rain")
    with pytest.raises(UsageError):
        corrupt(_photo(0), "contrast", 6)
    assert set(ALEXNET_ERRORS) == set(CORRUPTIONS) and len(CORRUPTIONS) == 15


# ---------------------------------------------------- primitives against the original tools
scipy_ndimage = pytest.importorskip("scipy.ndimage")


@pytest.mark.parametrize(
    ("sigma", "mode", "scipy_mode", "truncate"),
    [
        (0.7, "nearest", "nearest", 4.0),
        (1.5, "nearest", "nearest", 4.0),
        (2.44, "symmetric", "reflect", 3.0),
        (40.0, "symmetric", "reflect", 3.0),
    ],
)
def test_gaussian_filter_matches_scipy(sigma, mode, scipy_mode, truncate):
    image = np.random.default_rng(0).random((30, 26, 3))
    ours = gaussian_filter(image, sigma, mode=mode, truncate=truncate)
    theirs = scipy_ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode=scipy_mode,
                                           truncate=truncate)  # fmt: skip
    np.testing.assert_allclose(ours, theirs, atol=1e-10)


@pytest.mark.parametrize("zoom", [1.01, 1.1, 1.25, 4.5])
def test_zoom_matches_scipy_order_1(zoom):
    image = np.random.default_rng(1).random((21, 21, 3))
    theirs = scipy_ndimage.zoom(image, (zoom, zoom, 1), order=1)
    np.testing.assert_allclose(zoom_bilinear(image, zoom), theirs, atol=1e-10)


def test_bilinear_sampling_matches_scipy_map_coordinates():
    rng = np.random.default_rng(2)
    image = rng.random((12, 15, 3))
    rows = rng.uniform(-6, 18, (12, 15))
    cols = rng.uniform(-6, 21, (12, 15))
    ours = bilinear_sample(image, rows, cols, "symmetric")
    coordinates = [np.repeat(rows[..., None], 3, -1), np.repeat(cols[..., None], 3, -1),
                   np.broadcast_to(np.arange(3), (12, 15, 3))]  # fmt: skip
    theirs = scipy_ndimage.map_coordinates(image, coordinates, order=1, mode="reflect")
    np.testing.assert_allclose(ours, theirs, atol=1e-10)


def test_disk_blur_matches_opencv_border_rules():
    # OpenCV's filter2D default border is reflect-101, scipy's "mirror"
    from gfnet_cli.analysis.corruptions import _correlate2d, _disk

    image = np.random.default_rng(3).random((40, 40, 3))
    for radius in (3, 10):  # a small kernel (shifted sums) and a large one (FFT)
        kernel = _disk(radius, 0.5)
        theirs = np.stack([scipy_ndimage.correlate(image[..., c], kernel, mode="mirror")
                           for c in range(3)], -1)  # fmt: skip
        np.testing.assert_allclose(_correlate2d(image, kernel, "reflect101"), theirs, atol=1e-10)
    assert _disk(3, 0.1).sum() == pytest.approx(1.0)
    # Above radius 8 the original's disk touches its array's border, where OpenCV's reflect-101
    # blur folds weight back in: severity 5 brightens by 1 %, in ImageNet-C as here.
    assert _disk(10, 0.5).sum() == pytest.approx(1.0108, abs=1e-4)


def test_brightness_adds_to_the_hsv_value():
    image = np.random.default_rng(4).integers(0, 256, (6, 6, 3)).astype(np.uint8)
    image[0, 0] = 0  # black becomes grey
    out = corrupt(image, "brightness", 3, save_quality=None).astype(float) / 255
    for y, x in np.ndindex(*image.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*(image[y, x] / 255))
        expected = colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0))
        np.testing.assert_allclose(out[y, x], expected, atol=1 / 255 + 1e-9)


def test_motion_blur_kernel_is_imagemagicks():
    # angle 0: taps along +x at 0..width-1, one-sided Gaussian weights, width 2*ceil(r)+1
    kernel = motion_blur_kernel(2.5, 2.0, 0.0)
    assert [(dx, dy) for _, dx, dy in kernel] == [(i, 0) for i in range(7)]
    weights = np.exp(-np.arange(7) ** 2 / 8.0)
    np.testing.assert_allclose([w for w, _, _ in kernel], weights / weights.sum())
    assert [(dx, dy) for _, dx, dy in motion_blur_kernel(1, 1, 90.0)] == [(0, 0), (0, 1), (0, 2)]


# ------------------------------------------------------------------------ the whole run
def test_corrupted_images_do_not_depend_on_batching(digits, curve):
    again = robustness(
        str(digits["model"]), str(digits["data"]), split="test", attacks="none",
        corruptions="gaussian_noise,contrast", max_samples=180, batch_size=7, num_workers=1,
    )  # fmt: skip
    assert [(r.name, r.severity, r.top1) for r in again.corruptions] == [
        (r.name, r.severity, r.top1) for r in curve.corruptions
    ]
    assert again.attacks == [] and again.clean_top1 == curve.clean_top1
    assert curve.mean_corruption_error == pytest.approx(
        np.mean([1 - r.top1 for r in curve.corruptions])
    )
    assert curve.mce is None  # not an ImageNet model


def test_cli_json_output_and_plot(run_cli, digits, tmp_path):
    output, plot = tmp_path / "robust.json", tmp_path / "robust.png"
    result = run_cli(
        "robustness", "-m", digits["model"], "-d", digits["data"], "--split", "test",
        "--epsilon", "1/255", "--epsilon", "0.02", "--attack", "fgsm", "--corruptions", "fog",
        "--severity", "2", "--severity", "5", "--max-samples", "40", "--num-workers", "0",
        "--json", "--output", output, "--plot", plot,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    required = {"model", "dataset", "split", "num_samples", "clean_top1", "attacks",
                "corruptions", "mean_corruption_error"}  # fmt: skip
    assert required <= set(document)
    assert document["num_samples"] == 40 and document["split"] == "test"
    assert [(a["attack"], a["epsilon"], a["steps"]) for a in document["attacks"]] == [
        ("fgsm", pytest.approx(1 / 255), 1), ("fgsm", 0.02, 1),
    ]  # fmt: skip
    assert [(c["name"], c["severity"]) for c in document["corruptions"]] == [("fog", 2), ("fog", 5)]
    for value in [document["clean_top1"], document["mean_corruption_error"]] + [
        row["top1"] for row in document["attacks"] + document["corruptions"]
    ]:
        assert 0 <= value <= 1
    full = json.loads(output.read_text())
    assert {row["label"] for row in full["per_class"]} <= {str(i) for i in range(10)}
    assert sum(row["num_samples"] for row in full["per_class"]) == 40
    assert len(full["per_class"][0]["attacks"]) == 2
    assert len(full["per_class"][0]["corruptions"]) == 2
    assert plot.read_bytes()[:4] == b"\x89PNG"

    table = run_cli("-q", "robustness", "-m", digits["model"], "-d", digits["data"],
                    "--split", "test", "--max-samples", "20", "--num-workers", "0")  # fmt: skip
    assert table.exit_code == 0, table.stderr
    assert "FGSM ε=1/255" in table.stdout and "PGD ε=1/255, 5 steps of 0.5/255" in table.stdout


def _unlabelled_dataset(tmp_path: Path) -> Path:
    import datasets

    image = Image.new("RGB", (16, 16), (200, 10, 10))
    features = datasets.Features({"image": datasets.Image()})
    split = datasets.Dataset.from_dict({"image": [image] * 3}, features=features)
    folder = tmp_path / "unlabelled"
    datasets.DatasetDict({"test": split}).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilon", "-0.1"], "--epsilon must be in [0, 1]"),
        (["--epsilon", "2"], "--epsilon must be in [0, 1]"),
        (["--epsilon", "x/255"], "--epsilon takes a number"),
        (["--pgd-steps", "0"], "--pgd-steps must be at least 1"),
        (["--pgd-step-size", "0"], "--pgd-step-size must be in (0, 1]"),
        (["--corruptions", "rain"], "unknown corruption 'rain'"),
        (["--corruptions", "all", "--severity", "6"], "--severity must be 1 to 5"),
        (["--attack", "cw"], "unknown attack 'cw'"),
        (["--plot", "curves.jpg"], "--plot must end in .png"),
        (["--max-samples", "0"], "--max-samples must be at least 1"),
        (["--frost-textures", "missing-folder"], "--frost-textures missing-folder is not"),
    ],
)
def test_bad_input_exits_2_with_one_line(run_cli, digits, args, message):
    result = run_cli("robustness", "-m", digits["model"], "-d", digits["data"], *args)
    assert_one_line_error(result, 2, message)


def test_a_dataset_without_labels_exits_2(run_cli, digits, tmp_path):
    result = run_cli("robustness", "-m", digits["model"], "-d", _unlabelled_dataset(tmp_path),
                     "--num-workers", "0")  # fmt: skip
    assert_one_line_error(result, 2, "no label column")


def test_plot_without_matplotlib_names_the_extra(run_cli, digits, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run_cli("robustness", "-m", digits["model"], "-d", digits["data"],
                     "--plot", tmp_path / "p.png")  # fmt: skip
    assert_one_line_error(result, 2, "pip install '.[plot]' in the gfnet-cli clone")


def test_mce_for_an_imagenet_model_on_imagenet_classes(tmp_path):
    # ImageNet-1k class names on both sides (folders named by synset): mCE against AlexNet
    torch.manual_seed(0)
    config = GFNetConfig(patch_size=8, embed_dim=8, depth=1, img_size=32, num_classes=1000,
                         class_names=imagenet_class_names())  # fmt: skip
    folder = save_model(create_model(config), tmp_path / "imagenet-tiny")
    for synset in (imagenet_synsets()[5], imagenet_synsets()[2]):
        folder_of_class = tmp_path / "val" / "validation" / synset
        folder_of_class.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(_photo(i, 40)).save(folder_of_class / f"{i}.png")
    result = robustness(str(folder), str(tmp_path / "val"), attacks="none",
                        corruptions="contrast,fog", num_workers=0)  # fmt: skip
    assert result.label_mapping == "by_name"
    expected = [
        sum(1 - r.top1 for r in result.corruptions if r.name == name) / (5 * ALEXNET_ERRORS[name])
        for name in ("contrast", "fog")
    ]
    assert result.mce == pytest.approx(np.mean(expected))
    assert [e["ce"] for e in result.corruption_errors] == pytest.approx(expected)
    partial = robustness(str(folder), str(tmp_path / "val"), attacks="none",
                         corruptions="contrast", severities=[1, 2], num_workers=0)  # fmt: skip
    assert partial.mce is None  # AlexNet's errors are published for all five severities only


def test_progress_reports_every_image_of_every_pass(digits):
    calls = []
    robustness(str(digits["model"]), str(digits["data"]), split="test", attacks="fgsm",
               corruptions="contrast", severities=[1], max_samples=30, batch_size=16,
               num_workers=0, progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    assert calls[-1] == (60, 60)  # attack pass + one corruption pass
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_the_command_declares_the_contracts_flags():
    import typer

    from gfnet_cli.cli.main import app
    from gfnet_cli.cli.robustness_cmd import parse_pixels

    group = typer.main.get_command(app)
    context = typer.Context(group)
    flags = {opt for p in group.get_command(context, "robustness").params for opt in p.opts}
    assert {"--model", "--dataset", "--split", "--attack", "--epsilon", "--pgd-steps",
            "--pgd-step-size", "--corruptions", "--severity", "--max-samples", "--json",
            "--output", "--plot"} <= flags  # fmt: skip
    flags = {opt for p in group.get_command(context, "visualize").params for opt in p.opts}
    assert {"--output", "--layers", "--channels", "--data", "--json"} <= flags
    assert parse_pixels("1/255", "--epsilon") == pytest.approx(1 / 255)
    assert parse_pixels("0.5/255", "--epsilon") == pytest.approx(0.5 / 255)
    assert parse_pixels("0.004", "--epsilon") == 0.004
    assert parse_pixels("1e-3", "--epsilon") == 0.001
    for bad in ("-1/255", "1/0", "one"):
        with pytest.raises(UsageError):
            parse_pixels(bad, "--epsilon")
