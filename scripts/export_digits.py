"""Export scikit-learn's handwritten digits as an image folder DATASET, offline.

scikit-learn ships the 1,797 8x8 scans (UCI "optdigits", 16 grey levels) inside the package,
so no download is needed. They are written as PNG files, upscaled with nearest-neighbour so
each scan pixel stays a crisp block, under class folders of train/ and test/ splits:

    OUT/train/0/00012.png ... OUT/test/9/01790.png

The split is stratified and seeded (default 20 % test), so every run gets the same files.

    python scripts/export_digits.py OUT [--size 32] [--test-fraction 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def export_digits(
    out: Path,
    size: int = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
    train_fraction: float = 1.0,
) -> dict[str, int]:
    """Write the digits to ``out``; returns the number of images per split.

    ``train_fraction`` < 1 keeps only that share of the training images (a small-data
    variant used to choose augmentation defaults).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    indices = np.arange(len(images))
    train_idx, test_idx = train_test_split(
        indices, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    if train_fraction < 1.0:
        train_idx, _ = train_test_split(
            train_idx,
            train_size=train_fraction,
            random_state=seed,
            stratify=digits.target[train_idx],
        )
    counts = {}
    for split, chosen in (("train", train_idx), ("test", test_idx)):
        for index in chosen:
            folder = out / split / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(images[index], mode="L")
            if size != 8:
                image = image.resize((size, size), Image.Resampling.NEAREST)
            image.save(folder / f"{index:05d}.png")
        counts[split] = len(chosen)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to create")
    parser.add_argument("--size", type=int, default=32, help="side of the written PNGs (8: raw)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = export_digits(args.out, args.size, args.test_fraction, args.seed, args.train_fraction)
    print(f"wrote {counts['train']} train and {counts['test']} test images to {args.out}")


if __name__ == "__main__":
    main()
