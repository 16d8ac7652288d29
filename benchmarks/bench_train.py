"""Training throughput: the finetune loop beside a bare step, or our model beside a reference.

Two comparisons, each measured in one run with the runs interleaved (the machine may be
shared), reported as medians of per-step times:

- default: ``gfnet finetune``'s loop (JPEGs decoded and augmented in DataLoader workers, the
  loss all-reduce, clipping, the schedule) beside the bare forward + backward + AdamW step of
  the same model on ready tensors. The gap is the loop's overhead. On CUDA the loop runs its
  real data path: pinned batches copied ``non_blocking``, one host sync per step; compare two
  versions of the loop by running this on each, on the same GPU.
- ``--reference``: the bare training step of our GFNet beside the same step of a GFNet written
  the authors' way (benchmarks/bench_inference.py's RefGFNet, the same weights), in fp32 and
  bf16 autocast: our step time against the authors' code's, and bf16 against fp32.

``--device cuda`` times on a GPU (synchronized), with peak memory (the allocator's peak);
``--compile`` compiles the bare step's model (compile time reported apart) and the loop.

    python benchmarks/bench_train.py [--model gfnet-ti] [--img-size 224] [--batch-size 32]
        [--steps 6] [--num-workers 2] [--device cpu] [--precision fp32] [--compile] [--json]
    python benchmarks/bench_train.py --reference --model gfnet-xs --steps 6 [--json]
        [--form fft --form matmul --form auto]   # our step per global filter form
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gfnet_cli import create_model
from gfnet_cli.device import autocast_context, resolve_device
from gfnet_cli.engine.train import TrainCallbacks, TrainConfig, finetune, param_groups
from gfnet_cli.models.layers import filter_form

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import reference_for  # noqa: E402


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BareStep:
    """Forward + backward + AdamW step of ``model`` on fixed random tensors."""

    def __init__(self, model: torch.nn.Module, batch: int, img_size: int, device: torch.device,
                 precision: str, form: str | None = None) -> None:  # fmt: skip
        self.model = model.to(device).train()
        self.optimizer = torch.optim.AdamW(param_groups(model, 1e-4, False), lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch, 3, img_size, img_size, generator=generator).to(device)
        self.labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
        self.device, self.precision, self.form = device, precision, form
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def __call__(self) -> float:
        _synchronize(self.device)
        start = time.perf_counter()
        with filter_form(self.form) if self.form else contextlib.nullcontext():
            with autocast_context(self.device, self.precision):
                logits = self.model(self.images)
            loss = F.cross_entropy(logits.float(), self.labels, label_smoothing=0.1)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        _synchronize(self.device)
        return time.perf_counter() - start


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def interleaved(steps: dict[str, BareStep], repeats: int, warmup: int = 1
                ) -> dict[str, list[float]]:  # fmt: skip
    """Each step ``repeats`` times, round-robin, after ``warmup`` untimed rounds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in steps.items():
            elapsed = step()
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


# ---------------------------------------------------------------------- loop vs bare
class StepTimer(TrainCallbacks):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_step(self, step, epoch, loss, lr, ips) -> None:
        self.stamps.append(time.perf_counter())


def _write_jpegs(root: Path, count: int, img_size: int) -> Path:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        folder = root / "data" / "train" / label
        folder.mkdir(parents=True)
        for i in range(count // 2):
            array = rng.integers(0, 255, (img_size + 32, img_size + 64, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f"{i}.jpg", quality=90)
    return root / "data"


def loop_step_times(args: argparse.Namespace, root: Path) -> tuple[list[float], float | None]:
    data = _write_jpegs(root, args.batch_size * (args.steps + 2), args.img_size)
    timer = StepTimer()
    config = TrainConfig(
        model=args.model, dataset=str(data), output_dir=root / "out", from_scratch=True,
        img_size=args.img_size, batch_size=args.batch_size, epochs=1,
        max_steps=args.steps + 2, num_workers=args.num_workers, checkpoint_every=0,
        device=args.device, precision=args.precision, compile=args.compile,
        validation_split_percentage=0,  # every image trains: steps + 2 full steps
    )  # fmt: skip
    result = finetune(config, timer)
    deltas = [b - a for a, b in zip(timer.stamps, timer.stamps[1:], strict=False)]
    return deltas[1:], result.compile_time_s  # skip the step that waited for the workers


def loop_vs_bare(args: argparse.Namespace, device: torch.device) -> dict:
    model = create_model(args.model, num_classes=10, img_size=args.img_size)
    bare = BareStep(model, args.batch_size, args.img_size, device, args.precision)
    compile_s = None
    if args.compile:
        bare.model = torch.compile(bare.model)
        compile_s = bare()  # the first call compiles
    half = max(args.steps // 2, 1)
    # Bare steps before and after the loop, so a change of machine load hits both alike.
    bare_times = interleaved({"bare": bare}, half)["bare"]
    with tempfile.TemporaryDirectory() as tmp:
        loop, loop_compile_s = loop_step_times(args, Path(tmp))
    bare_times += interleaved({"bare": bare}, half, warmup=0)["bare"]
    bare_ips = args.batch_size / statistics.median(bare_times)
    loop_ips = args.batch_size / statistics.median(loop)
    return {
        "bare_images_per_second": round(bare_ips, 2),
        "loop_images_per_second": round(loop_ips, 2),
        "loop_overhead_pct": round(100 * (bare_ips / loop_ips - 1), 1),
        "bare_compile_s": None if compile_s is None else round(compile_s, 2),
        "loop_compile_s": loop_compile_s,
        "peak_memory_mb": _peak_memory_mb(device),
        "bare_step_s": [round(t, 4) for t in bare_times],
        "loop_step_s": [round(t, 4) for t in loop],
    }


# ---------------------------------------------------------------------- ours vs reference
def ours_vs_reference(args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    ours = create_model(args.model, num_classes=10, img_size=args.img_size)
    reference = reference_for(ours)
    steps = {"reference fp32": BareStep(reference, args.batch_size, args.img_size, device, "fp32")}
    for form in args.form or [None]:
        name = "gfnet fp32" if form is None else f"gfnet fp32 {form}"
        model = ours if form is None else create_model(
            args.model, num_classes=10, img_size=args.img_size)  # fmt: skip
        model.load_state_dict(ours.state_dict())
        steps[name] = BareStep(model, args.batch_size, args.img_size, device, "fp32", form)
    if not args.no_bf16:
        steps["reference bf16"] = BareStep(reference_for(ours), args.batch_size, args.img_size,
                                           device, "bf16")  # fmt: skip
        steps["gfnet bf16"] = BareStep(create_model(args.model, num_classes=10,
                                                    img_size=args.img_size), args.batch_size,
                                       args.img_size, device, "bf16")  # fmt: skip
    times = interleaved(steps, args.steps)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["reference fp32"]
    rows = {
        name: {"step_s": round(median, 4),
               "images_per_second": round(args.batch_size / median, 2),
               "speed_vs_reference_fp32": round(base / median, 3),
               # the fastest step: what a quiet moment of a shared machine gives
               "min_step_s": round(min(times[name]), 4)}  # fmt: skip
        for name, median in medians.items()
    }
    if "gfnet bf16" in medians:
        rows["gfnet bf16"]["speed_vs_gfnet_fp32"] = round(
            medians["gfnet fp32"] / medians["gfnet bf16"], 3
        )
    return {"runs": rows, "step_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
            "peak_memory_mb": _peak_memory_mb(device)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gfnet-ti")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="loop vs bare: fp32, bf16, fp16")
    parser.add_argument("--compile", action="store_true", help="loop vs bare: torch.compile")
    parser.add_argument("--reference", action="store_true", help="ours vs the authors' style")
    parser.add_argument("--no-bf16", action="store_true", help="--reference: fp32 only")
    parser.add_argument("--form", action="append", choices=("auto", "fft", "matmul"),
                        help="--reference: our fp32 step in this filter form")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    row = {
        "model": args.model,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
    }
    if args.reference:
        row |= ours_vs_reference(args, device)
    else:
        row |= {"precision": args.precision, "compile": args.compile}
        row |= loop_vs_bare(args, device)
    if args.json:
        print(json.dumps(row, indent=2))
        return
    _print(row, args)


def _print(row: dict, args: argparse.Namespace) -> None:
    print(f"{row['model']} {row['img_size']}px batch {row['batch_size']} on {row['device']}, "
          f"{row['threads']} threads")  # fmt: skip
    if args.reference:
        print(f"  {'run':<16}{'median s/step':>14}{'images/s':>10}{'vs ref fp32':>13}")
        for name, run in row["runs"].items():
            print(f"  {name:<16}{run['step_s']:>14.3f}{run['images_per_second']:>10.1f}"
                  f"{run['speed_vs_reference_fp32']:>12.2f}x")  # fmt: skip
        if "gfnet bf16" in row["runs"]:
            ratio = row["runs"]["gfnet bf16"]["speed_vs_gfnet_fp32"]
            print(f"  gfnet bf16 vs gfnet fp32: {ratio:.2f}x")
        return
    print(f"  bare forward+backward+step: {row['bare_images_per_second']:8.2f} img/s")
    print(f"  finetune loop:              {row['loop_images_per_second']:8.2f} img/s")
    print(f"  loop overhead:              {row['loop_overhead_pct']:+.1f} %")
    if row["peak_memory_mb"] is not None:
        print(f"  peak memory:                {row['peak_memory_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
