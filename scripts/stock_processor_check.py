"""Do transformers' stock image processors give the authors' evaluation pixels?

Compares CLIPImageProcessorPil, BitImageProcessorPil and ConvNextImageProcessorPil, set up
as the authors' transform (shorter side to int(S / 0.875), bicubic, centre crop S, ImageNet
mean/std), with gfnet's EvalTransform at 224 and 384: on scikit-image's photographs and on
random images of random sizes. Prints, per processor and size, how many were bit-identical.

    python scripts/stock_processor_check.py [--samples 60]
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image
from skimage import data as skimage_data
from transformers import BitImageProcessorPil, CLIPImageProcessorPil, ConvNextImageProcessorPil

from gfnet_cli.data.transforms import EvalTransform
from gfnet_cli.models.config import IMAGENET_MEAN, IMAGENET_STD, crop_size_to_resize


def processors(size: int) -> dict:
    resize = crop_size_to_resize(size, 0.875)
    common = {"resample": 3, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    crop = {"height": size, "width": size}
    return {
        "CLIPImageProcessorPil": CLIPImageProcessorPil(
            size={"shortest_edge": resize}, crop_size=crop, **common
        ),
        "BitImageProcessorPil": BitImageProcessorPil(
            size={"shortest_edge": resize}, crop_size=crop, **common
        ),
        "ConvNextImageProcessorPil": ConvNextImageProcessorPil(
            size={"shortest_edge": size}, crop_pct=0.875, **common
        ),
    }


def same(transform: EvalTransform, processor, image: Image.Image) -> bool:
    ours = transform(image).numpy()
    theirs = processor(image, return_tensors="np")["pixel_values"][0]
    return theirs.shape == ours.shape and np.array_equal(theirs, ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60, help="random images per size")
    args = parser.parse_args()
    photos = {
        n: Image.fromarray(getattr(skimage_data, n)()) for n in ("astronaut", "coffee", "chelsea")
    }
    rng = np.random.default_rng(0)
    for size in (224, 384):
        transform = EvalTransform(size)
        randoms = []
        for _ in range(args.samples):
            height, width = rng.integers(size, 3 * size, size=2)
            randoms.append(
                Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            )
        for name, processor in processors(size).items():
            verdicts = {n: same(transform, processor, im) for n, im in photos.items()}
            shown = ", ".join(f"{n} {'same' if ok else 'DIFFERENT'}" for n, ok in verdicts.items())
            equal = sum(same(transform, processor, image) for image in randoms)
            print(f"{size} {name}: {shown}; random sizes: {equal}/{len(randoms)} identical")


if __name__ == "__main__":
    main()
