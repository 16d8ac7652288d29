"""Run under ``torchrun --nproc_per_node 1``: the group forced on a single GPU process.

Creates the group the way ``gfnet finetune`` does on CUDA (``cpu:gloo,cuda:nccl``), checks
that CPU and CUDA tensors both reduce through the package's one helper, then fine-tunes a tiny
model inside that group (DistributedDataParallel over NCCL, gradient accumulation, EMA), so
every collective of the loop runs on a real NCCL group. Prints one JSON line.

    torchrun --standalone --nproc_per_node 1 tests/gpu/nccl_probe.py DATASET OUTPUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gfnet_cli.engine import distributed
from gfnet_cli.engine.train import TrainConfig, finetune


def main() -> None:
    dataset, output_dir = sys.argv[1], Path(sys.argv[2])
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    distributed.join_group(device, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    backends = str(dist.get_backend_config())
    cpu = torch.tensor([1.0, 2.0], dtype=torch.float64)
    gpu = torch.tensor([3.0, 4.0], device=device)
    distributed.all_reduce_sum(cpu)
    distributed.all_reduce_sum(gpu)
    gathered = distributed.all_gather_objects({"rank": dist.get_rank()})
    distributed.barrier()
    config = TrainConfig(
        model="gfnet-ti", dataset=dataset, output_dir=output_dir, from_scratch=True,
        patch_size=8, embed_dim=32, depth=2, img_size=32, epochs=2, batch_size=4,
        accumulate=2, ema=0.9, device="cuda", num_workers=0, checkpoint_every=2,
        precision="bf16", eval_split="test",
    )  # fmt: skip
    result = finetune(config)
    report = {
        "backends": backends,
        "cpu_sum": cpu.tolist(),
        "gpu_sum": gpu.tolist(),
        "gathered": gathered,
        "world_size": result.world_size,
        "global_step": result.global_step,
        "best_top1": result.best_top1,
        "group_still_up": dist.is_initialized(),
    }
    distributed.cleanup()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
