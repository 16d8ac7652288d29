"""Speed of ``gfnet robustness``: the attack loop and the corruptions, on this machine.

In one process, interleaved so that the machine's load hits every variant alike, medians of
``--repeats`` runs on random [0, 1] pixels (speed does not depend on the weights):

* clean: the forward pass the evaluation uses (inference mode, fused CPU path);
* fgsm: one forward + backward to the input, then the evaluation forward;
* pgd: ``--pgd-steps`` forward + backward passes, then the evaluation forward.

Then each corruption's throughput at the same image size on one core (what a DataLoader
worker produces), all five severities of an image at once as ``robustness`` asks for them.

    python benchmarks/bench_robustness.py --model gfnet-ti --img-size 224 --batch-size 16
    python benchmarks/bench_robustness.py --model path/to/digits-model --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from gfnet_cli.analysis.attacks import PixelModel, fgsm, pgd
from gfnet_cli.analysis.corruptions import CORRUPTIONS, corrupt_severities, plasma_fractal
from gfnet_cli.hub.resolve import create_model, load_model


def build(model: str, img_size: int | None) -> torch.nn.Module:
    """A zoo name builds its architecture (random weights, no download); a folder loads."""
    if Path(model).is_dir():
        return load_model(model, img_size=img_size)
    return create_model(model, **({"img_size": img_size} if img_size else {}))


def time_attacks(pixel_model, images, labels, epsilon, steps, repeats) -> dict[str, list[float]]:
    def run_pgd():
        return _predict(pixel_model, pgd(pixel_model, images, labels, epsilon, steps=steps))

    runs = {
        "clean": lambda: _predict(pixel_model, images),
        "fgsm": lambda: _predict(pixel_model, fgsm(pixel_model, images, labels, epsilon)),
        "pgd": run_pgd,
    }
    for run in runs.values():  # warm-up: allocator, packed weights, FFT plans
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            rates[name].append(len(images) / (time.perf_counter() - start))
    return rates


def _predict(model, images):
    with torch.inference_mode():
        return model(images)


def time_corruptions(size: int, images: int) -> dict[str, float]:
    """Images per second (all five severities each) per corruption, this process's one core."""
    rng = np.random.default_rng(0)
    mapsize = 1 << max(6, (size - 1).bit_length())
    photos = [
        (np.stack([plasma_fractal(rng, mapsize, 2.0)[:size, :size] for _ in range(3)], -1) * 255)
        .astype(np.uint8)
        for _ in range(images)
    ]
    rates = {}
    for name in CORRUPTIONS:
        start = time.perf_counter()
        for index, photo in enumerate(photos):
            corrupt_severities(photo, name, range(1, 6), seed=index)
        rates[name] = images / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gfnet-ti", help="zoo name or MODEL folder")
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epsilon", type=float, default=1 / 255)
    parser.add_argument("--pgd-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--corruption-images", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    net = build(args.model, args.img_size).eval()
    height, width = net.config.image_size
    pixel_model = PixelModel(net, net.config.mean, net.config.std).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch_size, 3, height, width, generator=generator)
    labels = torch.randint(0, max(1, net.num_classes), (args.batch_size,), generator=generator)
    rates = time_attacks(pixel_model, images, labels, args.epsilon, args.pgd_steps, args.repeats)
    torch.set_num_threads(1)
    corruption_rates = time_corruptions(min(height, width), args.corruption_images)

    medians = {name: statistics.median(values) for name, values in rates.items()}
    report = {
        "model": args.model,
        "img_size": [height, width],
        "batch_size": args.batch_size,
        "pgd_steps": args.pgd_steps,
        "images_per_second": medians,
        "runs": rates,
        "corruption_images_per_second_one_core": corruption_rates,
        "threads": args.threads or os.cpu_count(),
        "load_average": os.getloadavg(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.model} at {height}x{width}, batch {args.batch_size}, "
          f"load average {report['load_average'][0]:.2f}")  # fmt: skip
    for name, value in medians.items():
        runs = ", ".join(f"{v:.1f}" for v in rates[name])
        print(f"  {name:6s} {value:8.1f} images/s  ({runs}; x{value / medians['clean']:.3f})")
    print("corruptions, images/s on one core (five severities each):")
    for name, value in corruption_rates.items():
        print(f"  {name:18s} {value:8.1f}")


if __name__ == "__main__":
    main()
