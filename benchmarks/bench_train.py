"""Training throughput on CPU: the finetune loop beside a bare forward+backward+step.

Both use the same model (default gfnet-ti at 224 px, batch 32) and the same optimizer; the
loop additionally decodes and augments JPEGs in DataLoader workers, computes the loss
statistics, clips gradients and sets the learning rate. The gap is the loop's overhead.
Medians of per-step times, both measured in the same run (the machine may be shared).

    python benchmarks/bench_train.py [--model gfnet-ti] [--img-size 224] [--batch-size 32]
        [--steps 6] [--num-workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gfnet_cli.engine.train import TrainCallbacks, TrainConfig, finetune, param_groups
from gfnet_cli.models import create_model


def bare_step_times(model_name: str, img_size: int, batch: int, steps: int) -> list[float]:
    model = create_model(model_name, num_classes=10, img_size=img_size)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, 1e-4, False), lr=1e-4)
    images = torch.randn(batch, 3, img_size, img_size)
    labels = torch.randint(0, 10, (batch,))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times[1:]  # the first step warms up allocators


class StepTimer(TrainCallbacks):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_step(self, step, epoch, loss, lr, ips) -> None:
        self.stamps.append(time.perf_counter())


def loop_step_times(
    model_name: str, img_size: int, batch: int, steps: int, workers: int, root: Path
) -> list[float]:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        folder = root / "data" / "train" / label
        folder.mkdir(parents=True)
        for i in range(batch * (steps + 2) // 2):
            array = rng.integers(0, 255, (img_size + 32, img_size + 64, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f"{i}.jpg", quality=90)
    timer = StepTimer()
    config = TrainConfig(
        model=model_name, dataset=str(root / "data"), output_dir=root / "out",
        from_scratch=True, img_size=img_size, batch_size=batch, epochs=1,
        max_steps=steps + 2, num_workers=workers, checkpoint_every=0,
    )  # fmt: skip
    finetune(config, timer)
    deltas = [b - a for a, b in zip(timer.stamps, timer.stamps[1:], strict=False)]
    return deltas[1:]  # skip the step that waited for the workers to start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gfnet-ti")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # Bare steps before and after the loop, so a change of machine load hits both alike.
    half = max(args.steps // 2, 1)
    bare = bare_step_times(args.model, args.img_size, args.batch_size, half)
    with tempfile.TemporaryDirectory() as tmp:
        loop = loop_step_times(
            args.model, args.img_size, args.batch_size, args.steps, args.num_workers, Path(tmp)
        )
    bare += bare_step_times(args.model, args.img_size, args.batch_size, half)
    bare_ips = args.batch_size / statistics.median(bare)
    loop_ips = args.batch_size / statistics.median(loop)
    row = {
        "model": args.model,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "bare_images_per_second": round(bare_ips, 2),
        "loop_images_per_second": round(loop_ips, 2),
        "loop_overhead_pct": round(100 * (bare_ips / loop_ips - 1), 1),
        "bare_step_s": [round(t, 3) for t in bare],
        "loop_step_s": [round(t, 3) for t in loop],
    }
    if args.json:
        print(json.dumps(row, indent=2))
        return
    print(f"{args.model} {args.img_size}px batch {args.batch_size}, {row['threads']} threads")
    print(f"  bare forward+backward+step: {bare_ips:8.2f} img/s (median of {len(bare)} steps)")
    print(f"  finetune loop:              {loop_ips:8.2f} img/s (median of {len(loop)} steps)")
    print(f"  loop overhead:              {row['loop_overhead_pct']:+.1f} %")


if __name__ == "__main__":
    main()
