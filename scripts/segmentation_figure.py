"""The segmentation demo's figure: held-out scenes, their true masks and the model's masks.

One row per scene: the picture, the mask it was composed with, the mask ``gfnet predict``
gives (colours of gfnet_cli.data.masks.palette), enlarged with nearest neighbours. PIL only.

    python scripts/segmentation_figure.py SCENES MODEL OUT.png [--count 4] [--scale 6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from gfnet_cli.commands.predict import predict
from gfnet_cli.data.masks import colorize, open_mask

GAP = 4  # pixels between panels


def figure(scenes: Path, model: str, out: Path, count: int = 4, scale: int = 6) -> Path:
    images = sorted((scenes / "images" / "test").glob("*.png"))[:count]
    results = predict(images, model, device="cpu")
    rows = []
    for path, result in zip(images, results, strict=True):
        picture = np.asarray(Image.open(path).convert("RGB"))
        truth = colorize(open_mask(scenes / "annotations" / "test" / path.name))
        predicted = colorize(result.mask)
        panels = [np.kron(p, np.ones((scale, scale, 1), np.uint8)) for p in
                  (picture, truth, predicted)]  # fmt: skip
        gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
        rows.append(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))
        rows.append(np.full((GAP, rows[-1].shape[1], 3), 255, np.uint8))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows[:-1], axis=0)).save(out, optimize=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", type=Path)
    parser.add_argument("model")
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--scale", type=int, default=6)
    args = parser.parse_args()
    print(figure(args.scenes, args.model, args.out, args.count, args.scale))


if __name__ == "__main__":
    main()
