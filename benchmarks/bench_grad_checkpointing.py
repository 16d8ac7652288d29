"""Gradient checkpointing on the CPU: peak training memory and step time, with and without.

One training step is forward, cross-entropy, backward and an AdamW step at batch B.

- peak memory: each case (resolution x checkpointing) runs in a fresh Python process, with
  glibc's mmap threshold lowered and MKL's buffer cache off (as ``gfnet profile`` measures,
  gfnet_cli/profiling.py), so freed memory goes back to the system and the resident set
  follows the live tensors. The figure is the rise of the resident high-water mark over one
  step after a warm-up step (weights and optimizer state already resident): activations kept
  for the backward pass, gradients and temporaries.
- step time: per resolution, one process trains one model and switches checkpointing on and
  off between steps, so both modes see the same machine (a shared machine's load changes by
  the minute); the medians of ``--steps`` steps per mode after a warm-up step of each.

    python benchmarks/bench_grad_checkpointing.py [--model gfnet-ti] [--resolution 448 896]
        [--batch-size 4] [--steps 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _training_step(request: dict):
    """A model, its optimizer and a batch as ``request`` describes; returns step()."""
    import torch
    import torch.nn.functional as F

    from gfnet_cli import create_model
    from gfnet_cli.engine.train import param_groups

    torch.manual_seed(0)
    resolution, batch = request["resolution"], request["batch_size"]
    model = create_model(request["model"], img_size=resolution, num_classes=10).train()
    optimizer = torch.optim.AdamW(param_groups(model, 0.05, False), lr=1e-4)
    images = torch.randn(batch, 3, resolution, resolution)
    labels = torch.randint(0, 10, (batch,))

    def step(checkpointing: bool) -> float:
        model.set_grad_checkpointing(checkpointing)
        start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def child(request: dict) -> dict:
    """One measurement in this (fresh) process: a case's peak memory, or both modes' times."""
    from gfnet_cli.commands.profile import cpu_peak_rise_mb

    step = _training_step(request)
    if request["measure"] == "memory":
        checkpointing = request["checkpointing"]
        step(checkpointing)  # optimizer state, kernels, allocator pools: not a step's peak
        return {"peak_memory_mb": round(cpu_peak_rise_mb(lambda: step(checkpointing)), 1)}
    step(False)
    step(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(request["steps"]):
        for checkpointing in (False, True):
            times[checkpointing].append(step(checkpointing))
    return {"step_s": {str(k).lower(): round(statistics.median(v), 3) for k, v in times.items()}}


def run_child(request: dict) -> dict:
    env = dict(os.environ)
    env.update(MALLOC_MMAP_THRESHOLD_="4096", MALLOC_TRIM_THRESHOLD_="0", MKL_DISABLE_FAST_MM="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(request)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{request} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(model: str, resolution: int, batch: int, steps: int) -> list[dict]:
    """Both modes at one resolution: memory in a process each, times in one process."""
    base = {"model": model, "resolution": resolution, "batch_size": batch, "steps": steps}
    times = run_child(base | {"measure": "time"})["step_s"]
    rows = []
    for checkpointing in (False, True):
        memory = run_child(base | {"measure": "memory", "checkpointing": checkpointing})
        rows.append(base | {"checkpointing": checkpointing, **memory,
                            "step_s": times[str(checkpointing).lower()]})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gfnet-ti")
    parser.add_argument("--resolution", type=int, nargs="+", default=[448, 896])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    rows = []
    for resolution in args.resolution:
        rows += measure(args.model, resolution, args.batch_size, args.steps)
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"rows": rows, "load_average": load}, indent=2))
        return
    print(f"{args.model}, batch {args.batch_size}, CPU threads {os.cpu_count()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"{'px':>5} {'checkpointing':>13} {'peak MB':>9} {'step s':>7} {'memory':>7} {'time':>6}")
    for plain, checked in zip(rows[::2], rows[1::2], strict=True):
        for row in (plain, checked):
            memory = row["peak_memory_mb"] / plain["peak_memory_mb"]
            duration = row["step_s"] / plain["step_s"]
            print(f"{row['resolution']:>5} {'on' if row['checkpointing'] else 'off':>13} "
                  f"{row['peak_memory_mb']:>9.0f} {row['step_s']:>7.2f} {memory:>6.2f}x "
                  f"{duration:>5.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
