"""One process or many: ``torchrun`` sets the environment, this module reads it.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the process joins a process group; otherwise everything
here degrades to the single-process case, so the training loop has one code path. A group a
caller created before calling the library (``torch.distributed.init_process_group``) is used
as it is, even with one process.

**No collective ever hands a CPU tensor to NCCL.** NCCL takes only CUDA tensors, while the
loop's bookkeeping (the step's loss and image count, the Ctrl-C flag, evaluation totals, the
stream flags) lives in small CPU tensors. So a CUDA run's group maps each device type to its
own backend, ``cpu:gloo,cuda:nccl`` (:func:`process_group_backend`): CPU tensors travel over
gloo, gradients over NCCL. And :func:`all_reduce_sum`, the one helper every reduction goes
through, moves a tensor to a device the group can reduce on when it lacks a backend for it
(a caller's NCCL-only group), so no future collective can repeat that failure.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from gfnet_cli.device import resolve_device
from gfnet_cli.errors import GFNetError, UsageError, first_line


@dataclass
class DistInfo:
    """This process's place in the run: its rank, the number of processes, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group: bool = False  # a process group is active (several processes, or a caller's group)
    owns_group: bool = False  # :func:`setup` created it, so :func:`cleanup` destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether the model must be wrapped in DistributedDataParallel (a group is active)."""
        return self.group


def world_size_from_env() -> int:
    """How many processes ``torchrun`` started (1 outside it); reads nothing else."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_group_backend(device: torch.device) -> str:
    """The backend string for a group whose training runs on ``device``.

    CUDA: ``cpu:gloo,cuda:nccl``: gradients go over NCCL, the loop's CPU bookkeeping over
    gloo. Anything else: gloo for every tensor.
    """
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def join_group(device: torch.device, rank: int, world_size: int) -> None:
    """Initialize the default process group for training on ``device`` (env:// rendezvous)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend=process_group_backend(device), rank=rank, world_size=world_size
    )


def check_rank_device(requested: str | torch.device | None, local_rank: int, world_size: int,
                      device_count: int = 0, local_world_size: int | None = None,
                      visible_devices: str | None = None) -> None:  # fmt: skip
    """Refuse, with several processes, a device choice that puts two of them on one GPU.

    ``cuda:N`` is the same string in every process, so each would train on GPU N (only
    ``N == local_rank`` is this process's own). With ``cuda``/``auto``, more processes on the
    machine (``local_world_size``, else at least ``local_rank + 1``) than ``device_count``
    GPUs would take ``local_rank % device_count`` and double up — unless each process was
    given its own GPU (``visible_devices``, its ``CUDA_VISIBLE_DEVICES``, naming exactly the one
    GPU it sees). A pure function of its arguments, so the rule is tested without GPUs; sharing
    it cannot see is found after joining, by the GPUs' UUIDs (:func:`shared_gpus`). Raises
    :class:`UsageError` (``param="device"``).
    """
    if world_size <= 1:
        return
    text = str(requested or "auto").strip().lower()
    kind, _, index = text.partition(":")
    if kind == "cuda" and index and index.strip() != str(local_rank):
        raise UsageError(
            f"device {text}: every one of the {world_size} processes would train on that one "
            "GPU; use device cuda, and each process takes the GPU of its LOCAL_RANK",
            param="device",
        )
    if kind not in ("cuda", "auto") or device_count == 0 or index:
        return  # the CPU (gloo), no GPU (resolve_device says), or this process's own cuda:N
    processes = max(local_world_size or 0, local_rank + 1)
    own_gpu = device_count == 1 and len([d for d in (visible_devices or "").split(",") if d]) == 1
    if processes > device_count and not own_gpu:
        raise UsageError(
            f"{processes} processes on this machine but {device_count} GPU(s): two processes "
            f"would share a GPU; start at most {device_count} (torchrun --nproc_per_node "
            f"{device_count}), or give each its own with CUDA_VISIBLE_DEVICES",
            param="device",
        )


def shared_gpus(gpu_ids: Sequence[str]) -> list[list[int]]:
    """The ranks that train on one GPU together, by each rank's GPU UUID (rank order).

    Asked of the GPUs themselves rather than counted: a launcher that gives every process
    its own ``CUDA_VISIBLE_DEVICES`` shows each one GPU, ``cuda:0``, and shares nothing.
    """
    ranks_by_gpu: dict[str, list[int]] = {}
    for rank, gpu in enumerate(gpu_ids):
        ranks_by_gpu.setdefault(gpu, []).append(rank)
    return [ranks for ranks in ranks_by_gpu.values() if len(ranks) > 1]


def _refuse_shared_gpus(device: torch.device) -> None:
    """Stop every process, with one message, if two of them train on one GPU.

    NCCL refuses a GPU shared by two ranks only at the first gradient reduction, with an
    internal error; the UUIDs go over gloo (the group's CPU backend), which never minds.
    """
    shared = shared_gpus(all_gather_objects(str(torch.cuda.get_device_properties(device).uuid)))
    if not shared:
        return
    dist.destroy_process_group()
    first = shared[0]
    ranks = ", ".join(str(rank) for rank in first[:-1]) + f" and {first[-1]}"
    raise UsageError(
        f"processes {ranks} would train on one GPU ({len(shared)} GPU(s) shared): start at "
        "most one process per GPU (torchrun --nproc_per_node with the number of GPUs), or give "
        "each its own with CUDA_VISIBLE_DEVICES",
        param="device",
    )


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun``; pick the device.

    A CUDA device becomes the current one in every case (one process too): the default CUDA
    generator, which drop path draws from and a checkpoint saves, is the current device's.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not _group_active():  # a caller's group: the caller chose each process's device
        check_rank_device(device, local_rank, world_size_from_env(), _cuda_device_count(),
                          _local_world_size(), os.environ.get("CUDA_VISIBLE_DEVICES"))  # fmt: skip
    target = resolve_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if _group_active():  # created by the caller: use it, leave it to them
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, target, group=True)
    world_size = world_size_from_env()
    rank = int(os.environ.get("RANK", "0"))
    if world_size > 1:
        join_group(target, rank, world_size)
        if target.type == "cuda":
            _refuse_shared_gpus(target)
        return DistInfo(rank, world_size, local_rank, target, group=True, owns_group=True)
    return DistInfo(rank, world_size, local_rank, target)


def _cuda_device_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _local_world_size() -> int | None:
    """Processes ``torchrun`` started on this machine (None outside it)."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(value) if value.isdigit() else None


def cleanup(info: DistInfo | None = None) -> None:
    """Leave the process group :func:`setup` joined (a caller's group is left alone)."""
    if info is not None and not info.owns_group:
        return
    if _group_active():
        # a finished run's DDP wrapper, held only in a reference cycle, keeps the group's
        # backend alive until interpreter shutdown, when its threads can no longer be joined
        gc.collect()
        dist.destroy_process_group()


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def _reduction_device(tensor: torch.Tensor) -> torch.device:
    """Where the group can reduce ``tensor``: its own device, unless the group has no backend
    for that device type (an NCCL-only group and a CPU tensor): then this process's GPU."""
    config = str(dist.get_backend_config())  # e.g. "cpu:gloo,cuda:nccl" or "cuda:nccl"
    types = {part.split(":")[0].strip() for part in config.split(",") if ":" in part}
    if not types or tensor.device.type in types or "cuda" not in types:
        return tensor.device
    return torch.device("cuda", torch.cuda.current_device())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (a no-op in a single process).

    Every reduction of the package goes through here: a tensor on a device the group has no
    backend for is reduced on one it has, then copied back.
    """
    if not _group_active():
        return tensor
    device = _reduction_device(tensor)
    if device == tensor.device:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor
    moved = tensor.to(device)
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    tensor.copy_(moved)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics; a no-op in a single
    process or for a model without buffers).

    DDP copies them from rank 0 at the start of each forward, so each process's last training
    step leaves its own: evaluating with them would score each shard with other statistics
    than the weights rank 0 saves.
    """
    if not _group_active():
        return
    for buffer in module.buffers():
        device = _reduction_device(buffer)
        moved = buffer if device == buffer.device else buffer.to(device)
        dist.broadcast(moved, src=0)
        if moved is not buffer:
            buffer.copy_(moved)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if not _group_active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if _group_active():
        dist.barrier()


@contextlib.contextmanager
def main_process_first(timeout: timedelta) -> Iterator[None]:
    """Run the block in process 0 first, then in the others (a plain block in one process).

    The others wait on a gloo group of their own whose timeout is ``timeout``, not on the
    training group: process 0's first load of ImageNet-scale data (an image folder's cache is
    built then) outlasts NCCL's 10-minute default, while the training's collectives keep that
    shorter watchdog, so a hang in training is still caught quickly. Process 0 releases the
    others even when its block fails: they then fail alike, each with its own message.
    """
    if not _group_active() or dist.get_world_size() == 1:
        yield
        return
    group = dist.new_group(backend="gloo", timeout=timeout)
    try:
        if dist.get_rank() != 0:
            _wait_for_main(group, timeout)
        try:
            yield
        finally:
            if dist.get_rank() == 0:
                dist.barrier(group=group)
    finally:
        dist.destroy_process_group(group)


def _wait_for_main(group: Any, timeout: timedelta) -> None:
    try:
        dist.barrier(group=group)
    except RuntimeError as exc:  # gloo's timeout, or process 0 gone
        minutes = timeout.total_seconds() / 60
        text = first_line(exc)
        why = f"within {minutes:g} minutes" if "timed out" in text.lower() else f"({text})"
        raise GFNetError(
            f"process 0 did not finish preparing the data {why}; if it was still working, give "
            f"it longer with prepare_timeout (minutes)",
            param="prepare_timeout",
        ) from None
