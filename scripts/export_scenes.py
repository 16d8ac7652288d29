"""Compose segmentation scenes from scikit-learn's real handwritten digits, offline.

Each scene is a grey canvas with a few digit scans pasted at random places (each scan
upscaled 2x with nearest neighbours, tinted with a random colour, over a noisy background);
its mask says, per pixel, where the ink came from: 0 for the background, ``1 + i`` for a
stroke of the ``i``-th of :data:`DIGITS`. The scans of the training scenes and of the test
scenes are disjoint (scikit-learn's 1,797 scans split 80/20, stratified and seeded), so the
test split measures segmentation of handwriting the model never saw. There is no validation
split: ``gfnet finetune`` holds a seeded share of the training scenes out to choose its epoch,
and the test split is scored once, never chosen on.

Written as a segmentation DATASET folder (docs/segmentation.md), with the class names:

    OUT/images/train/00000.png  OUT/annotations/train/00000.png  ...  OUT/id2label.json

    python scripts/export_scenes.py OUT [--train 500] [--test 100] [--size 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

DIGITS = (0, 1, 4, 7)  # four shapes a small model tells apart in a few CPU minutes
INK = 6  # of 16 grey levels: a scan pixel at least this dark is a stroke


def compose(scans: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One scene: an (size, size, 3) uint8 image and its (size, size) uint8 mask
    (``labels``: each scan's class)."""
    image = rng.normal(70, 12, (size, size, 3))
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        pick = int(rng.integers(len(scans)))
        scan = np.kron(scans[pick], np.ones((2, 2)))  # 16x16, crisp blocks
        top, left = (int(v) for v in rng.integers(0, size - 16 + 1, 2))
        ink = scan >= INK
        tint = rng.uniform(150, 255, 3)
        window = image[top : top + 16, left : left + 16]
        strength = (scan / 16.0)[..., None]
        window[:] = window * (1 - strength) + tint * strength
        mask[top : top + 16, left : left + 16][ink] = labels[pick]
    return np.clip(image, 0, 255).round().astype(np.uint8), mask


def export_scenes(out: Path, train: int = 500, test: int = 100, size: int = 32,
                  seed: int = 0) -> dict[str, int]:  # fmt: skip
    """Write the scenes and their masks under ``out``; returns the scenes per split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.flatnonzero(np.isin(digits.target, DIGITS))
    train_idx, held_out = train_test_split(indices, test_size=0.2, random_state=seed,
                                           stratify=digits.target[indices])  # fmt: skip
    class_of = {digit: 1 + position for position, digit in enumerate(DIGITS)}
    targets = np.array([class_of.get(int(t), 0) for t in digits.target])
    counts = {}
    for stream, (split, chosen, count) in enumerate((("train", train_idx, train),
                                                      ("test", held_out, test))):  # fmt: skip
        rng = np.random.default_rng([seed, stream])
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, mask = compose(digits.images[chosen], targets[chosen], size, rng)
            Image.fromarray(image).save(out / "images" / split / f"{index:05d}.png")
            Image.fromarray(mask).save(out / "annotations" / split / f"{index:05d}.png")
        counts[split] = count
    names = ["background", *(f"digit {digit}" for digit in DIGITS)]
    labels = {str(index): name for index, name in enumerate(names)}
    (out / "id2label.json").write_text(json.dumps(labels, indent=1) + "\n")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = export_scenes(args.out, args.train, args.test, args.size, args.seed)
    print(f"wrote {counts['train']} training and {counts['test']} test scenes "
          f"to {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
