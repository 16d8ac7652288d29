"""Segmentation data (columns, mask folders, paired transforms) and ``evaluate`` on masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gfnet_cli import create_model
from gfnet_cli.commands.evaluate import evaluate
from gfnet_cli.data.datasets import DatasetError, collate_skipping_failures
from gfnet_cli.data.segmentation import (
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    TorchSegmentationDataset,
    find_mask_columns,
    load_segmentation_dataset,
    slide_logits,
)
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models import GFNetConfig
from gfnet_cli.models.config import SegmentationConfig
from gfnet_cli.tasks.segmentation import SEGMENTATION, per_category_iou
from tests.conftest import assert_one_line_error

CLASSES = 3
TINY = GFNetConfig(
    kind="pyramid", patch_size=4, embed_dim=[8, 8, 8, 8], depth=[1, 1, 1, 1], img_size=32,
    num_classes=CLASSES, task="segmentation",
    segmentation=SegmentationConfig(neck_channels=8, head_channels=8),
    class_names=["sky", "road", "tree"],
)  # fmt: skip


def tiny_segmenter(**changes):
    torch.manual_seed(0)
    return create_model(TINY.replace(**changes)).eval()


def scene(seed: int, size: tuple[int, int] = (40, 48)) -> tuple[Image.Image, np.ndarray]:
    """An image whose colour says the class: three vertical bands, noise, some 255 pixels."""
    rng = np.random.default_rng(seed)
    height, width = size
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 3 : 2 * width // 3] = 1
    mask[:, 2 * width // 3 :] = 2
    colours = np.array([[40, 90, 220], [120, 120, 120], [30, 160, 40]], np.uint8)
    pixels = colours[mask].astype(np.int16) + rng.integers(-20, 20, (height, width, 3))
    mask[rng.random((height, width)) < 0.05] = 255
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), mask


def mask_folder(root, splits=("training", "validation"), count=3, mask_dir="annotations"):
    """ADE20K's layout: images/<split>/*.jpg and annotations/<split>/*.png, matched by stem."""
    for split in splits:
        (root / "images" / split).mkdir(parents=True)
        (root / mask_dir / split).mkdir(parents=True)
        for index in range(count):
            image, mask = scene(index + (100 if split != "training" else 0))
            image.save(root / "images" / split / f"scene_{index}.png")
            Image.fromarray(mask, mode="L").save(root / mask_dir / split / f"scene_{index}.png")
    return root


def test_columns_are_found_by_name_and_a_classification_dataset_is_refused():
    import datasets

    image = datasets.Image()
    # scene_parse_150's own features: a scene ClassLabel beside the image and its mask
    scene = datasets.ClassLabel(names=["airport_terminal", "art_gallery", "badlands"])
    scene_parse = {"image": image, "annotation": image, "scene_category": scene}
    assert find_mask_columns(datasets.Features(scene_parse)) == ("image", "annotation")
    assert find_mask_columns(datasets.Features({"pixel_values": image, "label": image})) == (
        "pixel_values", "label")  # fmt: skip
    assert find_mask_columns(datasets.Features({"photo": image, "seg": image}), "photo", "seg")
    classification = datasets.Features({"image": image, "label": datasets.ClassLabel(names=["a"])})
    with pytest.raises(DatasetError, match=r"image \(Image\), label \(ClassLabel, 1 classes\)"):
        find_mask_columns(classification)


def test_a_mask_folder_pairs_images_and_masks_by_stem_per_split(tmp_path):
    root = mask_folder(tmp_path / "d", mask_dir="masks")
    (root / "images" / "validation" / "orphan.png").write_bytes(
        (root / "images" / "validation" / "scene_0.png").read_bytes()
    )
    data = load_segmentation_dataset(str(root))
    assert data.split == "validation" and len(data) == 3  # the orphan is left out
    assert (data.image_column, data.mask_column) == ("image", "annotation")
    view = TorchSegmentationDataset(data, SegmentationEvalTransform(32, [0.5] * 3, [0.5] * 3))
    image, mask, index = view[0]
    assert image.shape == (3, 32, 38) and mask.shape == (40, 48) and index == 0  # mask as stored
    assert set(np.unique(mask.numpy())) <= {0, 1, 2, 255}


def test_training_transform_is_seeded_per_sample_and_pads_masks_with_255():
    image, mask = scene(1, size=(20, 24))
    transform = SegmentationTrainTransform((32, 32), [0.5] * 3, [0.5] * 3, seed=3)
    first = transform(image, mask, (2, 7))
    again = transform(image, mask, (2, 7))
    other = transform(image, mask, (3, 7))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    for pixels, target in (first, other):
        assert pixels.shape == (3, 32, 32) and target.shape == (32, 32)
        assert set(target.unique().tolist()) <= {0, 1, 2, 255}
    # scale (32, 32) x ratio <= 2 can be smaller than the crop: the padding is ignored
    small = SegmentationTrainTransform((32, 32), [0.5] * 3, [0.5] * 3, ratio_range=(0.5, 0.5))
    pixels, target = small(image, mask, 0)
    assert bool((target[16:, :] == 255).all()) and float(pixels[:, 16:, :].abs().sum()) == 0.0
    # nearest neighbours only: no value the mask did not hold
    assert set(target.unique().tolist()) <= set(np.unique(mask).tolist())


def test_slide_inference_covers_every_pixel_and_matches_whole_for_a_pointwise_model():
    conv = torch.nn.Conv2d(3, 4, 1)
    images = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        assert torch.allclose(slide_logits(conv, images, 4, crop=32, stride=21), conv(images),
                              atol=1e-6)  # fmt: skip


def test_evaluate_a_segmentation_model_equals_scoring_by_hand(tmp_path, run_cli):
    """mIoU of the CLI's --json equals the model run on each resized image, logits resized to
    the original mask, scored with numpy; the masks' 255 pixels excluded."""
    root = mask_folder(tmp_path / "d")
    model = tiny_segmenter()
    save_model(model, tmp_path / "m")
    result = run_cli("evaluate", "--model", str(tmp_path / "m"), "--dataset", str(root),
                     "--json", "--num-workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    got = result.json()
    data = load_segmentation_dataset(str(root), "validation")
    transform = SegmentationEvalTransform(32, TINY.mean, TINY.std)
    metric = SEGMENTATION.metric(CLASSES)
    for row in TorchSegmentationDataset(data, transform):
        with torch.no_grad():
            logits = model(row[0][None])
        metric.update(F.interpolate(logits, size=row[1].shape, mode="bilinear"), row[1][None])
    expected = metric.summarize(metric.totals(), None)
    assert got["mean_iou"] == pytest.approx(expected.values["mean_iou"])
    assert got["per_category_iou"] == pytest.approx(per_category_iou(expected, CLASSES))
    assert got["num_samples"] == 3 and got["images_per_second"] > 0
    assert set(got) >= {"mean_accuracy", "overall_accuracy"}


def test_a_mismatched_mask_is_skipped_and_counted_or_refused_with_strict(tmp_path, run_cli):
    root = mask_folder(tmp_path / "d", count=2)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(
        root / "annotations" / "validation" / "scene_1.png"
    )
    (root / "annotations" / "validation" / "scene_0.png").write_bytes(b"not a png")
    model = tiny_segmenter()
    save_model(model, tmp_path / "m")
    with pytest.raises(Exception, match="no sample could be evaluated: 2 skipped"):
        evaluate(str(tmp_path / "m"), str(root), num_workers=0)
    result = run_cli("evaluate", "--model", str(tmp_path / "m"), "--dataset", str(root),
                     "--strict", "--num-workers", "0")  # fmt: skip
    assert_one_line_error(result, 2, "scene_1.png is 10x10, the image 48x40")


def test_values_beyond_the_classes_are_refused_naming_them(tmp_path, run_cli):
    """The value and the sample that holds it (the third of the split, in a batch whose first
    rows are fine) are named."""
    root = mask_folder(tmp_path / "d", count=3)
    mask = np.full((40, 48), 7, np.uint8)
    Image.fromarray(mask).save(root / "annotations" / "validation" / "scene_2.png")
    save_model(tiny_segmenter(), tmp_path / "m")
    result = run_cli("evaluate", "--model", str(tmp_path / "m"), "--dataset", str(root),
                     "--num-workers", "0", "--batch-size", "2")  # fmt: skip
    assert_one_line_error(result, 2, "mask value 7 (sample 2)")


def test_reduce_labels_defaults_to_the_models(tmp_path):
    """ADE20K-style masks (0 other, 1..3 classes) score like reduced ones when the model
    records reduce_labels; the option overrides it."""
    plain = mask_folder(tmp_path / "plain", count=2)
    shifted = tmp_path / "shifted"
    for split in ("training", "validation"):
        (shifted / "images").mkdir(parents=True, exist_ok=True)
        (shifted / "annotations" / split).mkdir(parents=True)
        (shifted / "images" / split).symlink_to(plain / "images" / split)
        for file in (plain / "annotations" / split).iterdir():
            mask = np.asarray(Image.open(file)).astype(np.int16) + 1
            mask[mask == 256] = 0
            Image.fromarray(mask.astype(np.uint8)).save(shifted / "annotations" / split / file.name)
    settings = SegmentationConfig(neck_channels=8, head_channels=8, reduce_labels=True)
    model = tiny_segmenter(segmentation=settings)
    reduced = evaluate(model, str(shifted), num_workers=0)
    direct = evaluate(model, str(plain), num_workers=0, reduce_labels=False)
    assert reduced.mean_iou == pytest.approx(direct.mean_iou) and reduced.reduce_labels
    with pytest.raises(Exception, match="mask value 3"):
        evaluate(model, str(shifted), num_workers=0, reduce_labels=False)


def test_task_and_dataset_kinds_must_agree(tmp_path, run_cli, data_dir):
    root = mask_folder(tmp_path / "d", count=1)
    save_model(tiny_segmenter(), tmp_path / "seg")
    classifier = create_model(GFNetConfig(patch_size=8, embed_dim=8, depth=1, img_size=32,
                                          num_classes=2))  # fmt: skip
    save_model(classifier, tmp_path / "cls")
    result = run_cli("evaluate", "--model", str(tmp_path / "cls"), "--dataset", str(root))
    assert_one_line_error(result, 2, "(columns: image (Image), annotation (Image)")
    import datasets

    labelled = datasets.Dataset.from_dict(
        {"image": [str(root / "images" / "validation" / "scene_0.png")], "label": [1]},
        features=datasets.Features({"image": datasets.Image(),
                                    "label": datasets.ClassLabel(names=["a", "b"])}),
    )  # fmt: skip
    labelled.save_to_disk(str(tmp_path / "cls-data"))
    result = run_cli("evaluate", "--model", str(tmp_path / "seg"), "--dataset",
                     str(tmp_path / "cls-data"))  # fmt: skip
    assert_one_line_error(result, 2, "label (ClassLabel, 2 classes)")


def test_masks_collate_into_one_tensor():
    items = [(torch.zeros(3, 4, 4), torch.ones(4, 4, dtype=torch.long), 0), (None, "bad", 1)]
    batch = collate_skipping_failures(items)
    assert batch.labels.shape == (1, 4, 4) and batch.failures == [(1, "bad")]
    json.dumps(batch.indices.tolist())


# ----------------------------------------------------------------------------------- predict
def test_predict_writes_palette_masks_at_each_images_size_and_never_overwrites(tmp_path, run_cli):
    from gfnet_cli.data.masks import open_mask, palette

    photos = tmp_path / "photos"
    photos.mkdir()
    scene(0, size=(40, 48))[0].save(photos / "wide.png")
    scene(1, size=(50, 30))[0].save(photos / "tall.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    model = tiny_segmenter()
    save_model(model, tmp_path / "m")
    out = tmp_path / "masks"
    args = ("predict", str(photos), "--model", str(tmp_path / "m"), "--output-dir", str(out))
    result = run_cli(*args, "--overlay", "--json")
    assert result.exit_code == 2  # the broken file, after the others were segmented
    entries = {Path(e["image"]).name: e for e in json.loads(result.stdout)}
    assert "error" in entries["broken.jpg"]
    for name, size in (("wide.png", (48, 40)), ("tall.jpg", (30, 50))):
        written = Image.open(out / f"{Path(name).stem}.png")
        assert written.mode == "P" and written.size == size
        assert written.getpalette()[:48] == palette()[:48]
        assert Image.open(out / f"{Path(name).stem}_overlay.png").size == size
        shares = entries[name]["predictions"]
        assert sum(item["share"] for item in shares) == pytest.approx(1.0)
        assert shares == sorted(shares, key=lambda item: -item["share"])
        assert {item["label"] for item in shares} <= {"sky", "road", "tree"}
    # the mask equals the model's logits at the image's size, arg-max
    image = Image.open(photos / "wide.png").convert("RGB")
    pixels = SegmentationEvalTransform(32, TINY.mean, TINY.std).image(image)
    with torch.no_grad():
        logits = F.interpolate(model(pixels[None]), size=(40, 48), mode="bilinear")
    assert np.array_equal(open_mask(out / "wide.png"), logits.argmax(1)[0].numpy())
    # the overlay is the photograph and the mask's colours, half and half
    colours = np.asarray(palette(), dtype=np.int16).reshape(-1, 3)[open_mask(out / "wide.png")]
    overlay = np.asarray(Image.open(out / "wide_overlay.png"), dtype=np.int16)
    assert np.abs(overlay - (np.asarray(image, dtype=np.int16) + colours) / 2).max() <= 1
    before = (out / "wide.png").stat().st_mtime_ns
    again = run_cli(*args)
    assert_one_line_error(again, 2, "exists")
    assert (out / "wide.png").stat().st_mtime_ns == before
    assert run_cli(*args, "--overwrite").exit_code == 2  # still the broken file


def test_a_long_strip_is_bounded_as_mmsegmentations_test_scale(tmp_path, run_cli):
    """Shorter side to the size, longer side at most 4x it (mmsegmentation's (2048, 512)): a
    3 x 6000 strip would otherwise become 32 x 64,000 pixels at size 32."""
    transform = SegmentationEvalTransform(32, TINY.mean, TINY.std)
    shapes = {size: tuple(transform.image(Image.new("RGB", size)).shape[1:])
              for size in [(48, 40), (40, 48), (128, 32), (6000, 3), (3, 6000)]}  # fmt: skip
    assert shapes == {(48, 40): (32, 38), (40, 48): (38, 32), (128, 32): (32, 128),
                      (6000, 3): (1, 128), (3, 6000): (128, 1)}  # fmt: skip
    Image.new("RGB", (6000, 3), (40, 90, 220)).save(tmp_path / "strip.png")
    save_model(tiny_segmenter(), tmp_path / "m")
    result = run_cli("predict", tmp_path / "strip.png", "--model", tmp_path / "m",
                     "--output-dir", tmp_path / "masks")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "masks" / "strip.png").size == (6000, 3)


def test_predict_refuses_two_inputs_writing_one_file(tmp_path, run_cli):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        scene(0)[0].save(tmp_path / folder / "x.png")
    save_model(tiny_segmenter(), tmp_path / "m")
    inputs = [str(tmp_path / folder / "x.png") for folder in ("a", "b")]
    result = run_cli("predict", *inputs, "--model", str(tmp_path / "m"),
                     "--output-dir", str(tmp_path / "o"))  # fmt: skip
    assert_one_line_error(result, 2, "would both write")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ the demo
def test_demo_scenes_are_real_digit_strokes_with_held_out_scans(tmp_path):
    """scripts/export_scenes.py writes a segmentation DATASET folder (with its class names)
    whose masks mark the inked pixels, by digit."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("export_scenes",
                                                  root / "scripts/export_scenes.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts = module.export_scenes(tmp_path / "s", train=6, test=3, size=32)
    assert counts == {"train": 6, "test": 3}
    data = load_segmentation_dataset(str(tmp_path / "s"), "test")
    assert data.class_names == ["background", "digit 0", "digit 1", "digit 4", "digit 7"]
    view = TorchSegmentationDataset(data, SegmentationEvalTransform(32, [0.0] * 3, [1.0] * 3))
    for image, mask, _ in view:
        labelled = mask > 0
        assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 4} and bool(labelled.any())
        brightness = image.mean(0)  # strokes are tinted brighter than the background
        assert float(brightness[labelled].mean()) > float(brightness[~labelled].mean())


def test_an_exported_segmentation_onnx_is_refused_by_evaluate_and_predict(tmp_path, run_cli):
    pytest.importorskip("onnxruntime")
    from gfnet_cli.commands.export import export_model

    root = mask_folder(tmp_path / "d", count=1)
    save_model(tiny_segmenter(), tmp_path / "m")
    export_model(tmp_path / "m", tmp_path / "seg.onnx")
    result = run_cli("evaluate", "--model", str(tmp_path / "seg.onnx"), "--dataset", str(root))
    assert_one_line_error(result, 2, "is an exported segmentation network")
    image = root / "images" / "validation" / "scene_0.png"
    result = run_cli("predict", str(image), "--model", str(tmp_path / "seg.onnx"))
    assert_one_line_error(result, 2, "is an exported segmentation network")
