"""Process groups: a CUDA run's group sends CPU tensors to gloo and CUDA tensors to NCCL;
a group the caller created is used (DDP, collectives, one gradient all-reduce per step)."""

from __future__ import annotations

import json
import types

import pytest
import torch
import torch.distributed as dist

from gfnet_cli.engine import distributed
from gfnet_cli.engine.train import finetune
from tests.test_finetune import _config, _write_images

CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_data")
    for index, name in enumerate(CLASSES):
        _write_images(root / "train" / name, 8, index, seed=0)
        _write_images(root / "test" / name, 2, index, seed=1)
    return root


@pytest.fixture
def one_process_group(tmp_path):
    """A real gloo group of one process, created the way a caller would."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_a_cuda_target_gets_gloo_for_cpu_and_nccl_for_cuda(monkeypatch):
    calls = {}
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.update(kwargs))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.update(device=device))
    distributed.join_group(torch.device("cuda", 1), rank=1, world_size=4)
    assert calls == {"backend": "cpu:gloo,cuda:nccl", "rank": 1, "world_size": 4,
                     "device": torch.device("cuda", 1)}  # fmt: skip
    # the string is one torch reads as a per-device mapping
    mapping = dist.distributed_c10d.BackendConfig("cpu:gloo,cuda:nccl").get_device_backend_map()
    assert mapping == {"cpu": "gloo", "cuda": "nccl"}
    assert distributed.process_group_backend(torch.device("cpu")) == "gloo"


def test_setup_on_a_gpu_machine_under_torchrun_passes_the_mapping(monkeypatch):
    """What ``torchrun --nproc_per_node 2 gfnet finetune`` does on a 2-GPU machine, with the
    GPU calls recorded instead of made (this machine has none)."""
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.update(device=device))
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.update(kwargs))
    gpu = types.SimpleNamespace(uuid="GPU-1")  # processes compare GPUs after joining
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: gpu)
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    info = distributed.setup("auto")
    assert info.device == torch.device("cuda", 1) and info.distributed and info.owns_group
    assert calls == {"backend": "cpu:gloo,cuda:nccl", "rank": 1, "world_size": 2,
                     "device": torch.device("cuda", 1)}  # fmt: skip


def test_setup_under_torchrun_joins_with_the_mapping(monkeypatch):
    calls = {}
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.update(kwargs))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    info = distributed.setup("cpu")
    assert calls == {"backend": "gloo", "rank": 1, "world_size": 2}
    assert (info.rank, info.world_size, info.distributed, info.owns_group) == (1, 2, True, True)


def test_a_real_group_reduces_cpu_bookkeeping(monkeypatch, tmp_path):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    distributed.join_group(torch.device("cpu"), rank=0, world_size=1)
    try:
        assert "cpu:gloo" in str(dist.get_backend_config())
        totals = torch.tensor([2.0, 3.0], dtype=torch.float64)
        assert distributed.all_reduce_sum(totals) is totals and totals.tolist() == [2.0, 3.0]
        assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
        distributed.barrier()
    finally:
        distributed.cleanup()
    assert not dist.is_initialized()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_collectives_are_no_ops_without_a_group():
    tensor = torch.ones(2)
    assert distributed.all_reduce_sum(tensor) is tensor and tensor.tolist() == [1.0, 1.0]
    assert distributed.all_gather_objects(3) == [3]
    info = distributed.setup("cpu")
    assert (info.world_size, info.distributed) == (1, False)


def test_finetune_in_a_callers_group_wraps_ddp_and_reduces_once_per_step(
    image_folder, tmp_path, one_process_group, monkeypatch
):
    """Accumulation under DDP: gradients are all-reduced once per optimizer step, never for
    the micro-batches before the last (no_sync), and the group stays the caller's."""
    reductions = []
    original_init = torch.nn.parallel.DistributedDataParallel.__init__

    def counting_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)

        def hook(state, bucket):
            reductions.append(bucket.index())
            future = torch.futures.Future()
            future.set_result(bucket.buffer())
            return future

        self.register_comm_hook(None, hook)

    monkeypatch.setattr(torch.nn.parallel.DistributedDataParallel, "__init__", counting_init)
    out = tmp_path / "ddp"
    # 24 images, micro-batches of 4, 2 per step: 3 steps an epoch, 6 in all
    result = finetune(_config(image_folder, out, batch_size=4, accumulate=2, ema=0.9))
    assert result.global_step == 6 and result.world_size == 1
    assert len(reductions) == 6  # one bucket (a tiny model), one all-reduce per step
    assert dist.is_initialized()  # the caller's group is left to the caller
    saved = json.loads((out / "train_results.json").read_text())
    assert saved["hyperparameters"]["global_batch_size"] == 8


def test_deterministic_ddp_keeps_its_buckets_and_the_mode_only_for_the_run(
    image_folder, tmp_path, one_process_group, monkeypatch
):
    """--deterministic: DDP never regroups its buckets (a resumed run all-reduces alike), and
    PyTorch's deterministic switches hold during the run and are restored after it."""
    from gfnet_cli.engine.train import TrainCallbacks

    seen: dict = {}
    original_init = torch.nn.parallel.DistributedDataParallel.__init__

    def recording_init(self, *args, **kwargs):
        seen["find_unused_parameters"] = kwargs.get("find_unused_parameters")
        original_init(self, *args, **kwargs)

    class ModeProbe(TrainCallbacks):
        def on_step(self, step, epoch, loss, lr, ips) -> None:
            seen.setdefault("modes", []).append((torch.are_deterministic_algorithms_enabled(),
                                                 torch.backends.cudnn.deterministic))  # fmt: skip

    monkeypatch.setattr(torch.nn.parallel.DistributedDataParallel, "__init__", recording_init)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # unset, restored after
    result = finetune(_config(image_folder, tmp_path / "det", deterministic=True), ModeProbe())
    assert result.global_step == 12
    assert seen["find_unused_parameters"] is True
    assert set(seen["modes"]) == {(True, True)}
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # set before CUDA could start
