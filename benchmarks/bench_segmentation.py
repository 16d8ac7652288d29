"""Segmentation throughput: training steps and whole-image inference of GFNet + Semantic FPN.

One run measures, side by side and interleaved (the machine may be shared), medians of:

- training: forward + cross-entropy (255 ignored) + backward + AdamW step on a batch of
  ``--crop`` crops (the ade20k recipe's 512), images/s;
- whole-image inference: one image at ``--crop`` on its shorter side (``--aspect`` 4:3 by
  default, 512x683, as ADE20K's scenes are resized for evaluation), logits resized to the
  image, images/s;

each in fp32 and bf16 autocast. Random weights (the timings do not depend on them) and random
pixels; the model is built for 150 classes.

    python benchmarks/bench_segmentation.py [--model gfnet-h-ti] [--crop 512] [--batch-size 2]
        [--steps 3] [--device cpu] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from gfnet_cli import create_model
from gfnet_cli.device import autocast_context, resolve_device
from gfnet_cli.tasks.segmentation import SEGMENTATION


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model, optimizer, images, masks, device, precision) -> float:
    start = time.perf_counter()
    with autocast_context(device, precision):
        logits = model(images)
    loss = SEGMENTATION.loss(logits, masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    _synchronize(device)
    return time.perf_counter() - start


def _infer(model, image, device, precision) -> float:
    start = time.perf_counter()
    with torch.inference_mode(), autocast_context(device, precision):
        logits = model(image)
    F.interpolate(logits.float(), size=image.shape[-2:], mode="bilinear").argmax(1)
    _synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gfnet-h-ti")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--aspect", type=float, default=4 / 3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed repeats of each (+1 warmup)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model, task="segmentation", num_classes=150,
                         img_size=args.crop).to(device)  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    images = torch.randn(args.batch_size, 3, args.crop, args.crop, device=device)
    masks = torch.randint(0, 150, (args.batch_size, args.crop, args.crop), device=device)
    whole = torch.randn(1, 3, args.crop, round(args.crop * args.aspect), device=device)
    precisions = ["fp32", "bf16"]
    times: dict[str, list[float]] = {f"{kind}_{p}": [] for kind in ("train", "infer")
                                     for p in precisions}  # fmt: skip
    for repeat in range(args.steps + 1):  # the first round warms up and is not counted
        for precision in precisions:
            model.train()
            train = _train_step(model, optimizer, images, masks, device, precision)
            model.eval()
            infer = _infer(model, whole, device, precision)
            if repeat:
                times[f"train_{precision}"].append(train)
                times[f"infer_{precision}"].append(infer)
    result = {
        "model": args.model, "crop": args.crop, "batch_size": args.batch_size,
        "whole_image": list(whole.shape[-2:]), "device": str(device),
        "threads": torch.get_num_threads(), "steps": args.steps,
    }  # fmt: skip
    for key, values in times.items():
        per_image = args.batch_size if key.startswith("train") else 1
        result[f"{key}_images_per_second"] = round(per_image / statistics.median(values), 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.model} + Semantic FPN (150 classes) on {device}, {result['threads']} threads, "
          f"median of {args.steps}")  # fmt: skip
    for precision in precisions:
        print(f"  {precision}: training {result[f'train_{precision}_images_per_second']:.3f} "
              f"images/s (batch {args.batch_size} of {args.crop}x{args.crop}), whole-image "
              f"inference {result[f'infer_{precision}_images_per_second']:.3f} images/s "
              f"({whole.shape[-2]}x{whole.shape[-1]})")  # fmt: skip


if __name__ == "__main__":
    main()
