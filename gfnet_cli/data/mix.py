"""Mixup and cutmix on a training batch, with soft targets (timm's batch mode, no timm).

Per batch, with probability ``prob``: draw ``lam ~ Beta(alpha, alpha)`` and pair each image
with the same position in the reversed batch (``x.flip(0)``).

- **mixup** blends the images: ``lam * x + (1 - lam) * x.flip(0)``;
- **cutmix** pastes a box of the reversed batch covering about ``1 - lam`` of the image, then
  sets ``lam`` to the exact share of the image left uncovered (the box is clipped at the edges).

When both are on, cutmix is chosen with probability ``switch_prob``. The targets become
``lam * onehot(y) + (1 - lam) * onehot(y.flip(0))`` with label smoothing folded in as timm does
(``off = smoothing / classes``, ``on = 1 - smoothing + off``); the loss is
``F.cross_entropy(logits, targets)``, which takes class probabilities as targets. With
``lam == 1`` that equals ``F.cross_entropy(logits, labels, label_smoothing=smoothing)``.

Randomness never comes from global state: the caller passes a generator (the training loop
uses :func:`step_rng` of ``(seed, rank, step)``), so a resumed run mixes every step exactly as
the uninterrupted run did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Tags the mix stream so it never coincides with the per-sample augmentation streams.
_MIX_STREAM = 0x6D6978


def step_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The generator for one training step of one process: independent of global state."""
    return np.random.default_rng([_MIX_STREAM, int(seed) % 2**63, int(rank), int(step)])


def soft_targets(
    labels: torch.Tensor, num_classes: int, lam: float = 1.0, smoothing: float = 0.0
) -> torch.Tensor:
    """``lam * onehot(y) + (1 - lam) * onehot(y.flip(0))``, each one-hot label-smoothed."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    onehot = torch.full((len(labels), num_classes), off, device=labels.device)
    onehot.scatter_(1, labels[:, None], on)
    return onehot * lam + onehot.flip(0) * (1.0 - lam)


def cutmix_box(
    height: int, width: int, lam: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A (top, bottom, left, right) box of about ``1 - lam`` of the image, clipped to it.

    timm's rule: sides ``sqrt(1 - lam)`` of the image's, centred anywhere in the image.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


@dataclass(frozen=True)
class Mixer:
    """Mixup/cutmix settings; call it on a batch to get mixed images and soft targets."""

    num_classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        """This batch's ``(lam, use_cutmix)``; ``lam == 1`` means no mixing."""
        if not self.enabled or rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Mixed images (a new tensor), soft targets and the ``lam`` used."""
        lam, use_cutmix = self.draw(rng)
        if lam < 1.0:
            if use_cutmix:
                height, width = images.shape[-2:]
                top, bottom, left, right = cutmix_box(height, width, lam, rng)
                images = images.clone()
                images[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
                lam = 1.0 - (bottom - top) * (right - left) / (height * width)
            else:
                images = images * lam + images.flip(0) * (1.0 - lam)
        return images, soft_targets(labels, self.num_classes, lam, self.smoothing), lam
