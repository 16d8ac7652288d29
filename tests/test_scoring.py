"""The one scoring core (engine/scoring.py) and the classification task it scores with."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gfnet_cli import create_model
from gfnet_cli.data.datasets import Batch
from gfnet_cli.engine.scoring import MAX_REPORTED_SKIPS, Skips, score, scored_rows
from gfnet_cli.errors import UsageError
from gfnet_cli.models import GFNetConfig
from gfnet_cli.tasks import TASKS, get_task
from gfnet_cli.tasks.classification import CLASSIFICATION

CPU = torch.device("cpu")


def _model(num_classes: int = 7):
    config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=num_classes)
    return create_model(config).eval()


def test_scores_kept_on_the_device_equal_a_hand_computation():
    """Sums stay on the outputs' device and are read once (totals); unlabelled rows are
    skipped, counted and named; the per-class table counts what was scored."""
    torch.manual_seed(0)
    model = _model()
    images = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([3, -1, 0, 6, -1, 3])
    batches = [
        Batch(images[r], labels[r], torch.arange(6)[r], []) for r in (slice(0, 4), slice(4, 6))
    ]
    metric, skips = CLASSIFICATION.metric(7), Skips()
    seen = score(model, batches, CLASSIFICATION, metric, num_classes=7, device=CPU, skips=skips)
    result = metric.summarize(metric.totals(), [f"c{i}" for i in range(7)])
    with torch.inference_mode():
        keep = labels >= 0
        logits = model(images[keep])
    target = labels[keep]
    assert seen == 6 and result.count == 4 and skips.count == 2
    assert [s["index"] for s in skips.reported] == [1, 4]
    assert result.values["top1"] == int((logits.argmax(-1) == target).sum()) / 4
    top5 = (logits.topk(5, -1).indices == target[:, None]).any(-1)
    assert result.values["top5"] == int(top5.sum()) / 4
    loss = float(F.cross_entropy(logits, target, reduction="sum")) / 4
    assert result.values["loss"] == pytest.approx(loss)
    assert result.primary == "top1" and result.score == result.values["top1"]
    rows = {row["label"]: row for row in result.per_class}
    assert sorted(rows) == ["c0", "c3", "c6"] and rows["c3"]["num_samples"] == 2
    assert rows["c3"]["top5"] == int(top5[target == 3].sum()) / 2


def test_totals_add_up_over_shards_like_one_pass():
    """What processes all-reduce: the sum of two halves' totals equals one pass's."""
    torch.manual_seed(1)
    logits, targets = torch.randn(10, 4), torch.randint(0, 4, (10,))
    whole, first, second = (CLASSIFICATION.metric(4) for _ in range(3))
    whole.update(logits, targets)
    first.update(logits[:6], targets[:6])
    second.update(logits[6:], targets[6:])
    summed = first.totals() + second.totals()
    assert torch.allclose(summed, whole.totals())
    assert whole.summarize(summed, None).values == pytest.approx(
        whole.summarize(whole.totals(), None).values
    )


def test_max_samples_counts_unreadable_rows_and_failures_come_first():
    model = _model(3)
    batch = Batch(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]),
                  [(0, "broken")])  # fmt: skip
    metric, skips = CLASSIFICATION.metric(3), Skips()
    seen = score(model, [batch, batch], CLASSIFICATION, metric, num_classes=3, device=CPU,
                 skips=skips, max_samples=3)  # fmt: skip
    assert seen == 3 and skips.count == 1
    assert metric.summarize(metric.totals(), None).count == 2


def test_skips_are_all_counted_and_the_first_few_named():
    skips = Skips()
    for index in range(MAX_REPORTED_SKIPS + 5):
        skips.add(index, "no label")
    assert skips.count == MAX_REPORTED_SKIPS + 5 and len(skips.reported) == MAX_REPORTED_SKIPS
    assert skips.first_reason() == " (first: no label)"


def test_out_of_range_targets_are_refused_on_the_host_naming_the_data():
    batch = Batch(torch.randn(2, 3, 32, 32), torch.tensor([0, 9]), torch.arange(2), [])
    with pytest.raises(UsageError, match=r"data \[test\]: label 9 is out of range"):
        scored_rows(batch, CLASSIFICATION, 3, CPU, "data [test]")


def test_a_batch_without_a_scorable_row_scores_nothing():
    batch = Batch(torch.randn(2, 3, 32, 32), torch.tensor([-1, -1]), torch.arange(2), [])
    skips = Skips()
    assert scored_rows(batch, CLASSIFICATION, 3, CPU, "d", skips) is None
    assert skips.count == 2


def test_tasks_are_found_by_the_name_config_json_records():
    assert get_task(None) is CLASSIFICATION and get_task("classification") is CLASSIFICATION
    assert set(TASKS) >= {"classification"}
    with pytest.raises(UsageError, match="task must be one of"):
        get_task("detection")


def test_the_classification_loss_takes_indices_and_mixed_targets():
    torch.manual_seed(2)
    logits, targets = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    soft = F.one_hot(targets, 3).float()
    assert torch.allclose(CLASSIFICATION.loss(logits, targets), CLASSIFICATION.loss(logits, soft))
    smoothed = CLASSIFICATION.loss(logits, targets, label_smoothing=0.1)
    assert torch.allclose(smoothed, F.cross_entropy(logits, targets, label_smoothing=0.1))


def test_describe_gives_the_top_k_classes_with_softmax_scores():
    logits = torch.tensor([[0.0, 2.0, 1.0]])
    [rows] = CLASSIFICATION.describe(logits, ["a", "b", "c"], top_k=5)
    assert [r["label"] for r in rows] == ["b", "c", "a"]
    assert sum(r["score"] for r in rows) == pytest.approx(1.0)
