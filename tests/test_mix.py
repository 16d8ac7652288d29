"""Mixup/cutmix (gfnet_cli.data.mix): lambdas, boxes, soft targets, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gfnet_cli.data.mix import Mixer, cutmix_box, soft_targets, step_rng


def _batch(n: int = 6, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 16, 20, generator=generator)
    return images, torch.arange(n) % classes


def test_off_is_identity_with_smoothed_one_hot_targets():
    images, labels = _batch()
    mixer = Mixer(num_classes=4, smoothing=0.1)
    assert not mixer.enabled
    mixed, targets, lam = mixer(images, labels, step_rng(0, 0, 0))
    assert lam == 1.0 and torch.equal(mixed, images)
    assert torch.allclose(targets, soft_targets(labels, 4, 1.0, 0.1))
    # mix probability 0: enabled, but no batch is mixed
    never = Mixer(4, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)
    mixed, _, lam = never(images, labels, step_rng(0, 0, 1))
    assert lam == 1.0 and torch.equal(mixed, images)


def test_soft_target_loss_without_mixing_equals_label_smoothed_cross_entropy():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    got = F.cross_entropy(logits, soft_targets(labels, 4, 1.0, 0.1))  # probability targets
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_targets_sum_to_one_and_weigh_both_labels(smoothing):
    labels = torch.tensor([0, 1, 2, 3, 2])
    targets = soft_targets(labels, 5, 0.7, smoothing)
    assert torch.allclose(targets.sum(dim=1), torch.ones(5))
    off = smoothing / 5
    on = 1 - smoothing + off
    # row 0 pairs label 0 with the flipped batch's label 2
    assert targets[0, 0].item() == pytest.approx(0.7 * on + 0.3 * off)
    assert targets[0, 2].item() == pytest.approx(0.7 * off + 0.3 * on)
    assert targets[0, 4].item() == pytest.approx(off)


def test_mixup_blends_with_the_reversed_batch():
    images, labels = _batch()
    mixer = Mixer(4, mixup_alpha=0.8)
    for step in range(20):
        mixed, targets, lam = mixer(images, labels, step_rng(3, 0, step))
        assert 0.0 <= lam <= 1.0
        assert torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0), atol=1e-6)
        assert torch.allclose(targets.sum(dim=1), torch.ones(len(labels)))


def test_cutmix_lambda_is_the_exact_uncovered_area():
    images, labels = _batch()
    mixer = Mixer(4, cutmix_alpha=1.0)
    seen_boxes = 0
    for step in range(30):
        mixed, targets, lam = mixer(images, labels, step_rng(5, 0, step))
        changed = (mixed != images).any(dim=(0, 1))  # pixels pasted from the reversed batch
        assert lam == pytest.approx(1 - changed.float().mean().item())
        assert 0.0 <= lam <= 1.0
        assert torch.equal(mixed[:, :, changed], images.flip(0)[:, :, changed])
        assert targets[0, labels[0]].item() >= lam - 1e-6
        seen_boxes += bool(changed.any())
    assert seen_boxes > 20


def test_cutmix_box_stays_inside_the_image():
    for step in range(200):
        rng = step_rng(0, 0, step)
        lam = float(rng.uniform())
        top, bottom, left, right = cutmix_box(16, 20, lam, rng)
        assert 0 <= top <= bottom <= 16 and 0 <= left <= right <= 20
        # never larger than the requested 1 - lam (clipping only shrinks it)
        assert (bottom - top) * (right - left) <= (1 - lam) * 16 * 20 + 1e-9


def test_switch_probability_picks_cutmix_or_mixup():
    mixer = Mixer(4, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5)
    kinds = [mixer.draw(step_rng(0, 0, s))[1] for s in range(200)]
    assert 60 < sum(kinds) < 140
    assert not any(Mixer(4, 1.0, 1.0, switch_prob=0.0).draw(step_rng(0, 0, s))[1]
                   for s in range(50))  # fmt: skip
    assert all(Mixer(4, 1.0, 1.0, switch_prob=1.0).draw(step_rng(0, 0, s))[1] for s in range(50))


def test_the_draws_are_a_function_of_seed_rank_and_step():
    mixer = Mixer(4, mixup_alpha=0.8, cutmix_alpha=1.0)
    first = mixer.draw(step_rng(1, 0, 7))
    mixer.draw(step_rng(1, 0, 8))
    torch.manual_seed(123)  # global state must not matter
    assert mixer.draw(step_rng(1, 0, 7)) == first
    others = {mixer.draw(step_rng(1, rank, step)) for rank in (0, 1) for step in range(10)}
    assert len(others) == 20


def test_mixing_does_not_modify_the_input_batch():
    images, labels = _batch()
    copy = images.clone()
    for step in range(10):
        Mixer(4, mixup_alpha=1.0, cutmix_alpha=1.0)(images, labels, step_rng(0, 0, step))
    assert torch.equal(images, copy)
