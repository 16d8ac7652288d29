"""The segmentation task on the seam: mask checks, loss, mIoU as mmsegmentation and evaluate."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gfnet_cli.data.datasets import Batch, collate_skipping_failures
from gfnet_cli.data.masks import reduce_labels
from gfnet_cli.engine.scoring import Skips, score
from gfnet_cli.tasks import get_task
from gfnet_cli.tasks import segmentation as segmentation_task
from gfnet_cli.tasks.segmentation import (
    SEGMENTATION,
    MaskValueError,
    per_category_iou,
    resize_logits,
    resized_logit_bands,
)

CPU = torch.device("cpu")


def _numpy_mean_iou(predictions, labels, num_classes, ignore_index=255):
    """evaluate's mean_iou / mmsegmentation's IoUMetric, written out with numpy histograms."""
    intersect = np.zeros(num_classes)
    area_pred = np.zeros(num_classes)
    area_label = np.zeros(num_classes)
    for pred, label in zip(predictions, labels, strict=True):
        keep = label != ignore_index
        pred, label = pred[keep], label[keep]
        hits = pred[pred == label]
        intersect += np.histogram(hits, bins=num_classes, range=(0, num_classes - 1))[0]
        area_pred += np.histogram(pred, bins=num_classes, range=(0, num_classes - 1))[0]
        area_label += np.histogram(label, bins=num_classes, range=(0, num_classes - 1))[0]
    union = area_pred + area_label - intersect
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersect / union
        acc = intersect / area_label
    return {
        "mean_iou": float(np.nanmean(iou)),
        "mean_accuracy": float(np.nanmean(acc)),
        "overall_accuracy": float(intersect.sum() / area_label.sum()),
        "per_category_iou": iou,
    }


def test_registered_with_its_primary_metric():
    task = get_task("segmentation")
    assert task is SEGMENTATION and task.primary_metric == "mean_iou"
    assert task.pipeline_tag == "image-segmentation"


def test_mean_iou_equals_a_numpy_computation_with_ignored_pixels_over_batches():
    """Random logits at half the mask size (resized to the mask before argmax), 255-labelled
    pixels, a class never labelled but predicted (IoU 0) and one in neither (NaN, left out)."""
    generator = torch.Generator().manual_seed(0)
    classes = 6
    metric = SEGMENTATION.metric(classes)
    predictions, labels = [], []
    for _ in range(3):
        logits = torch.randn(2, classes, 8, 10, generator=generator)
        logits[:, 5] -= 100  # class 5: never predicted, never labelled
        masks = torch.randint(0, 4, (2, 16, 20), generator=generator)  # class 4 never labelled
        masks[torch.rand(2, 16, 20, generator=generator) < 0.2] = 255
        metric.update(logits, masks)
        full = F.interpolate(logits, size=(16, 20), mode="bilinear", align_corners=False)
        predictions += list(full.argmax(1).numpy())
        labels += list(masks.numpy())
    result = metric.summarize(metric.totals(), None)
    expected = _numpy_mean_iou(predictions, labels, classes)
    assert bool((np.stack(predictions) == 4).any())  # the never-labelled class is predicted
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert result.values[key] == pytest.approx(expected[key], abs=1e-12), key
    ious = per_category_iou(result, classes)
    assert ious[4] == 0.0 and ious[5] is None and math.isnan(expected["per_category_iou"][5])
    assert ious[:5] == pytest.approx(list(expected["per_category_iou"][:5]))
    assert result.count == 6 and result.primary == "mean_iou"
    json.dumps(result.values)  # no NaN in what evaluate --json prints


EVALUATE_MEAN_IOU = Path(__file__).parent / "data" / "evaluate_mean_iou" / "mean_iou.py"


@pytest.mark.parametrize("reduce", [False, True], ids=["labels", "reduce-labels"])
def test_mean_iou_equals_hugging_face_evaluates(reduce):
    """The real ``evaluate`` library running its own ``mean_iou`` script (the one
    ``evaluate.load("mean_iou")`` fetches from the Hub) on images of different sizes with
    ignored pixels; with ``reduce`` the labels are ADE20K-style, 0 for "other", and ours are
    reduced by the data pipeline's :func:`reduce_labels` where evaluate reduces them itself."""
    import evaluate

    generator = np.random.default_rng(3)
    classes = 5
    metric = SEGMENTATION.metric(classes)
    predictions, references = [], []
    for height, width in [(7, 9), (12, 5), (6, 6), (16, 11)]:
        prediction = generator.integers(0, classes - 1, (height, width))  # the last: never
        reference = generator.integers(0, classes - 1 + reduce, (height, width))
        reference[generator.random((height, width)) < 0.15] = 255
        predictions.append(prediction)
        references.append(reference.astype(np.uint8))
        target = reduce_labels(reference) if reduce else reference
        logits = F.one_hot(torch.from_numpy(prediction), classes).permute(2, 0, 1)[None]
        metric.update(logits.float(), torch.from_numpy(target.astype(np.int64))[None])
    ours = metric.summarize(metric.totals(), None)
    theirs = evaluate.load(str(EVALUATE_MEAN_IOU)).compute(
        predictions=predictions, references=references, num_labels=classes, ignore_index=255,
        reduce_labels=reduce,
    )  # fmt: skip
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert ours.values[key] == pytest.approx(float(theirs[key]), abs=1e-12), key
    expected = [None if math.isnan(iou) else pytest.approx(iou, abs=1e-12)
                for iou in theirs["per_category_iou"]]  # fmt: skip
    assert per_category_iou(ours, classes) == expected and expected[-1] is None


@pytest.mark.parametrize(("source", "size"), [((16, 21), (97, 130)), ((64, 64), (40, 50)),
                                              ((8, 8), (300, 3)), ((5, 7), (1, 1))])  # fmt: skip
def test_logits_resized_in_bands_equal_the_whole(source, size):
    """Up- and downsampling, a single row: each band of rows is the whole resize's rows."""
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 6, *source, generator=generator)
    whole = resize_logits(logits, size)
    small = 4 * 2 * 6 * size[1] * 4 * 3  # three rows a band
    bands = list(resized_logit_bands(logits, size, band_bytes=small))
    assert len(bands) == -(-size[0] // 3) and bands[0][0] == slice(0, min(3, size[0]))
    joined = torch.cat([band for _, band in bands], dim=2)
    torch.testing.assert_close(joined, whole, rtol=0, atol=1e-5)
    assert torch.equal(joined.argmax(1), whole.argmax(1))
    (rows, only), = resized_logit_bands(logits, size)  # fits: the whole, exactly
    assert rows == slice(0, size[0]) and torch.equal(only, whole)


def test_the_metric_in_bands_equals_the_metric_whole(monkeypatch):
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 9, 11, generator=generator)
    masks = torch.randint(0, 4, (2, 40, 37), generator=generator)
    masks[:, :5] = 255
    whole = SEGMENTATION.metric(4)
    whole.update(logits, masks)
    monkeypatch.setattr(segmentation_task, "RESIZE_BAND_BYTES", 4 * 2 * 4 * 37 * 4 * 2)
    banded = SEGMENTATION.metric(4)
    banded.update(logits, masks)
    torch.testing.assert_close(banded.totals(), whole.totals(), rtol=1e-6, atol=0)
    assert torch.equal(banded.totals()[2:], whole.totals()[2:])  # the pixel counts exactly


def test_a_photograph_sized_mask_never_holds_its_full_size_logits():
    """150 class maps at 2000 x 3000 take 3.6 GB: the mask comes with a fraction of that."""
    script = (
        "import resource, torch\n"
        "from gfnet_cli.tasks.segmentation import resized_argmax\n"
        "logits = torch.randn(1, 150, 96, 128)\n"
        "mask = resized_argmax(logits, (2000, 3000))\n"
        "assert mask.shape == (1, 2000, 3000) and int(mask.max()) < 150\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=os.environ | {"PYTHONPATH": str(root)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 1536  # MB at the peak, the 48 MB mask and torch included


def test_totals_add_up_over_shards_like_one_pass():
    torch.manual_seed(1)
    logits, masks = torch.randn(4, 3, 6, 6), torch.randint(0, 3, (4, 6, 6))
    whole, first, second = (SEGMENTATION.metric(3) for _ in range(3))
    whole.update(logits, masks)
    first.update(logits[:1], masks[:1])
    second.update(logits[1:], masks[1:])
    assert torch.allclose(first.totals() + second.totals(), whole.totals())


def test_loss_ignores_255_and_matches_cross_entropy():
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 5, 5, requires_grad=True)
    masks = torch.randint(0, 4, (2, 5, 5))
    masks[0, :2] = 255
    loss = SEGMENTATION.loss(logits, masks)
    keep = masks != 255
    by_hand = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], masks[keep])
    assert float(loss.detach()) == pytest.approx(float(by_hand.detach()))
    loss.backward()
    assert float(logits.grad[0, :, :2].abs().sum()) == 0.0  # ignored pixels give no gradient


def test_check_targets_names_the_value_and_the_data():
    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    masks[:, 0, 0] = 255
    SEGMENTATION.check_targets(masks, 3, "d [validation]")  # 255 is fine
    masks[1, 2, 3] = 7
    with pytest.raises(MaskValueError, match=r"d \[validation\]: mask value 7 \(row 1"):
        SEGMENTATION.check_targets(masks, 3, "d [validation]")
    with pytest.raises(Exception, match="classification dataset"):
        SEGMENTATION.check_targets(torch.tensor([0, 1]), 3, "d")
    # a training batch whose every sample was skipped (unreadable masks) has nothing to check
    skipped = collate_skipping_failures([(None, "corrupt", 0), (None, "corrupt", 1)])
    SEGMENTATION.check_targets(skipped.labels, 3, "d")


def test_every_mask_is_a_labelled_row_and_scores_through_the_one_loop():
    """score() over a stand-in (B, C, H, W) model: all rows scored, none skipped."""

    class Constant(torch.nn.Module):
        def forward(self, images):
            logits = torch.zeros(len(images), 3, *images.shape[-2:])
            logits[:, 1] = 1.0  # predicts class 1 everywhere
            return logits

    masks = torch.ones(2, 4, 4, dtype=torch.long)
    masks[0, :2] = 0
    masks[1, 0] = 255
    batch = Batch(torch.zeros(2, 3, 4, 4), masks, torch.arange(2), [(5, "broken mask")])
    metric, skips = SEGMENTATION.metric(3), Skips()
    score(Constant(), [batch], SEGMENTATION, metric, num_classes=3, device=CPU, skips=skips)
    result = metric.summarize(metric.totals(), ["a", "b", "c"])
    assert skips.count == 1 and result.count == 2
    # class 1: 8 + 12 labelled pixels, all hit; 8 class-0 pixels predicted as 1
    assert per_category_iou(result, 3) == [0.0, 20 / 28, None]
    assert result.values["overall_accuracy"] == pytest.approx(20 / 28)


def test_describe_lists_classes_by_pixel_share():
    logits = torch.zeros(1, 3, 2, 4)
    logits[0, 2, :, :3] = 1  # 6 pixels class 2
    logits[0, 0, :, 3] = 1  # 2 pixels class 0
    rows = SEGMENTATION.describe(logits, ["a", "b", "c"], top_k=5)
    assert rows == [[{"index": 2, "label": "c", "share": 0.75},
                     {"index": 0, "label": "a", "share": 0.25}]]  # fmt: skip
