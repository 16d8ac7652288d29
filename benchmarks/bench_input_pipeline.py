"""The training input pipeline in images/s per DataLoader worker: JPEG bytes from Hub-style
parquet -> decode -> random-resized-crop at 224 (+ flip) -> RandAugment -> normalize.

Writes a parquet file the way Hub image datasets store theirs (a ``datasets`` ``Image``
feature: JPEG bytes in the column, a ``ClassLabel``), of synthetic photos (smooth shapes,
gradients and grain, so they compress like photographs; 500x375 by default, ImageNet's typical
size), then reads it through the training source ``gfnet finetune`` uses
(``engine.train.data.train_source``: the same dataset, transform, sampler and DataLoader) with
0 workers (in-process), 1 and 2, and reports images/s after the first batch (worker start-up
excluded).

Pipelines: ``crop`` (our default: crop area 0.6-1, flip), ``authors`` (the recipes': crop
0.08-1, flip, RandAugment rand-m9-mstd0.5-inc1), and with ``--large``, the authors' pipeline on
2048x1536 photos with and without Pillow's reduced JPEG decoding (``draft``).

    python benchmarks/bench_input_pipeline.py [--images 192] [--workers 0,1,2] [--large] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from gfnet_cli.data.datasets import ImageDataset, find_columns
from gfnet_cli.engine.distributed import DistInfo
from gfnet_cli.engine.train import TrainConfig
from gfnet_cli.engine.train.data import train_source
from gfnet_cli.models.zoo import get_zoo_entry

PIPELINES = {
    "crop": {"crop_scale": (0.6, 1.0)},
    "authors": {"crop_scale": (0.08, 1.0), "randaugment": "rand-m9-mstd0.5-inc1"},
}


def synthetic_photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Smooth gradients, a few blurred shapes and sensor-like grain: JPEG sizes like photos."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy, phase = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 6.3)]
        base[..., channel] = 128 + 90 * np.sin(fx * x / width * 6.3 + fy * y / height * 6.3
                                               + phase)  # fmt: skip
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        size = int(rng.integers(width // 12, width // 3))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse([x0, y0, x0 + size, y0 + size * 3 // 4], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=2))
    grain = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray((np.asarray(image, np.float32) + grain).clip(0, 255).astype(np.uint8))


def write_parquet(folder: Path, count: int, size: tuple[int, int]) -> tuple[Path, float]:
    """A Hub-style parquet of ``count`` JPEG photos; returns its path and mean JPEG bytes."""
    import datasets

    rng = np.random.default_rng(0)
    images, labels, sizes = [], [], []
    for index in range(count):
        buffer = io.BytesIO()
        synthetic_photo(*size, rng).save(buffer, format="JPEG", quality=90)
        images.append({"bytes": buffer.getvalue(), "path": f"{index}.jpg"})
        labels.append(index % 10)
        sizes.append(len(buffer.getvalue()))
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    data = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    path = folder / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    data.to_parquet(str(path))
    return path, float(np.mean(sizes))


def load_split(path: Path) -> ImageDataset:
    import datasets

    data = datasets.load_dataset("parquet", data_files={"train": str(path)})["train"]
    image_col, label_col, names = find_columns(data.features, None, None)
    return ImageDataset(data, str(path), "train", image_col, label_col, names)


def images_per_second(split: ImageDataset, workers: int, batch: int, settings: dict,
                      draft: bool) -> float:  # fmt: skip
    """Steady images/s of the training source (the first batch, worker start-up, excluded)."""
    config = TrainConfig(model="gfnet-xs", dataset="bench", output_dir=Path("unused"),
                         batch_size=batch, num_workers=workers, seed=0, **settings)  # fmt: skip
    model_config = get_zoo_entry("gfnet-xs").config()
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    source = train_source(split, model_config, config, dist)
    if not draft:  # decode every JPEG in full
        source.dataset.transform.decode_reduction = None
    batches = source.batches(epoch=0, skip=0)
    first = next(batches)
    start, images = time.perf_counter(), 0
    for batch_data in batches:
        images += len(batch_data.labels)
    assert len(first.labels) and images, "no images were decoded"
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--size", default="500x375", help="photo size WxH")
    parser.add_argument("--large", action="store_true", help="also 2048x1536, draft on/off")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the main process only collates here
    workers = [int(w) for w in args.workers.split(",")]
    size = tuple(int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(name, size, True, args.images) for name in PIPELINES]
        if args.large:
            big = (2048, 1536)
            cases += [("authors", big, True, args.images // 2),
                      ("authors", big, False, args.images // 2)]  # fmt: skip
        made: dict[tuple, tuple[ImageDataset, float]] = {}
        for name, photo, draft, count in cases:
            if (photo, count) not in made:
                path, mean_bytes = write_parquet(Path(tmp) / f"{photo[0]}-{count}", count, photo)
                made[(photo, count)] = (load_split(path), mean_bytes)
            split, mean_bytes = made[(photo, count)]
            for worker_count in workers:
                ips = images_per_second(split, worker_count, args.batch_size, PIPELINES[name],
                                        draft)  # fmt: skip
                rows.append({
                    "pipeline": name, "photo": f"{photo[0]}x{photo[1]}",
                    "jpeg_kb": round(mean_bytes / 1024, 1), "draft": draft,
                    "workers": worker_count, "images_per_second": round(ips, 1),
                })  # fmt: skip
    report = {"cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{os.cpu_count()} cores, load average {report['load_average'][0]:.2f}")
    print(f"{'pipeline':<9}{'photo':>11}{'KiB':>7}{'draft':>7}{'workers':>9}{'images/s':>10}")
    for row in rows:
        print(f"{row['pipeline']:<9}{row['photo']:>11}{row['jpeg_kb']:>7}{str(row['draft']):>7}"
              f"{row['workers']:>9}{row['images_per_second']:>10}")  # fmt: skip


if __name__ == "__main__":
    main()
