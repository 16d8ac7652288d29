"""Evaluation input pipeline: ``evaluate``'s images/s beside the bare model forward's.

Generates a folder of JPEGs (about 500x375, like ImageNet photos), then in one process and
alternating, to share the machine's load fairly:

* forward: ``model(x)`` on ready-made 224 px batches (no decoding, no transform);
* decode: JPEG decode + the evaluation transform alone, one core (the pipeline's ceiling);
* evaluate: :func:`gfnet_cli.commands.evaluate.evaluate` on the folder (JPEG decode, resize,
  crop, normalize in DataLoader workers, then the same forward).

The gap between the two is the input pipeline's share. Medians of ``--repeats`` runs.

    python benchmarks/bench_evaluate.py --model gfnet-ti --images 256 --batch-size 64 \
        --num-workers 1 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gfnet_cli import create_model
from gfnet_cli.commands.evaluate import evaluate
from gfnet_cli.data.datasets import TorchImageDataset, load_image_dataset
from gfnet_cli.data.transforms import eval_transform


def make_jpegs(root: Path, count: int, classes: int = 4, size=(500, 375)) -> Path:
    """Photo-like JPEGs (smooth gradients plus noise, so they compress like photos)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    for i in range(count):
        folder = root / "validation" / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.stack([(x * (i + 1)) % 256, (y * 3 + i * 7) % 256, (x + y) % 256], axis=-1)
        noisy = base + rng.normal(0, 12, base.shape)
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        image.save(folder / f"{i:05d}.jpg", quality=90)
    return root


def bench_forward(model: torch.nn.Module, batch_size: int, img_size: int, batches: int) -> float:
    x = torch.randn(batch_size, 3, img_size, img_size)
    with torch.inference_mode():
        model(x)  # warm-up: caches, allocator
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        elapsed = time.perf_counter() - start
    return batches * batch_size / elapsed


def bench_decode(data, transform) -> float:
    """Decode + transform alone, in this process (one core): the pipeline's own ceiling."""
    view = TorchImageDataset(data, transform)
    start = time.perf_counter()
    for index in range(len(view)):
        view[index]
    return len(view) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gfnet-ti", help="zoo architecture (random weights)")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="reuse/keep the JPEG folder")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model(args.model, img_size=args.img_size).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp) / "jpegs"
        if not folder.exists() or not any(folder.rglob("*.jpg")):
            make_jpegs(folder, args.images)
        data = load_image_dataset(str(folder))  # built once, outside the timings
        batches = max(1, args.images // args.batch_size)
        forward, pipeline, decode = [], [], []
        for _ in range(args.repeats):
            decode.append(bench_decode(data, eval_transform(model.config)))
            forward.append(bench_forward(model, args.batch_size, args.img_size, batches))
            result = evaluate(
                model,
                data,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                device="cpu",
                label_order="index",
            )
            pipeline.append(result.images_per_second)
    report = {
        "model": args.model,
        "img_size": args.img_size,
        "images": len(data),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "forward_images_per_second": statistics.median(forward),
        "evaluate_images_per_second": statistics.median(pipeline),
        "decode_transform_images_per_second_one_core": statistics.median(decode),
        "forward_runs": [round(v, 1) for v in forward],
        "evaluate_runs": [round(v, 1) for v in pipeline],
    }
    report["evaluate_over_forward"] = (
        report["evaluate_images_per_second"] / report["forward_images_per_second"]
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
