"""On a CUDA GPU: bf16 and fp16 fine-tuning, exact resume after a kill, evaluate / predict /
profile, and the NCCL process group through torchrun (skipped without CUDA; never in CI).

Run them with ``pytest -m gpu tests/gpu -v`` or ``scripts/gpu_check.sh``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gfnet_cli import create_model
from gfnet_cli.commands.evaluate import evaluate
from gfnet_cli.commands.predict import predict
from gfnet_cli.commands.profile import ProfileOptions, profile
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine.train import TrainConfig, finetune
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models.config import GFNetConfig
from tests.test_finetune import CLASSES, _env, _wait_for_checkpoint, _write_images
from tests.test_finetune_faults import _labelled

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gpu_data")
    for index, name in enumerate(CLASSES):
        _write_images(root / "train" / name, 16, index, seed=0)
        _write_images(root / "test" / name, 4, index, seed=1)
    return root


def _config(dataset: Path, out: Path, **changes) -> TrainConfig:
    values = dict(
        model="gfnet-ti", dataset=str(dataset), output_dir=out, from_scratch=True,
        patch_size=8, embed_dim=32, depth=2, img_size=32, epochs=3, batch_size=8,
        num_workers=2, lr=3e-3, device="cuda", checkpoint_every=0,
        eval_split="test",  # every epoch scored on the same images: what these checks read
    )  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)


# ---------------------------------------------------------------------- precision
def test_bf16_finetune_on_cuda(image_folder, tmp_path):
    result = finetune(_config(image_folder, tmp_path / "bf16", precision="bf16"))
    assert result.best_top1 is not None and result.best_top1 > 0.5
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in result.history)
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "bf16" / "checkpoints")[-1])
    assert "cuda" in state["rng"][0]  # the CUDA generator is checkpointed too
    assert all(v.device.type == "cpu" and v.dtype == torch.float32
               for v in state["model"].values())  # fmt: skip


def test_fp16_finetune_uses_the_grad_scaler(image_folder, tmp_path):
    result = finetune(_config(image_folder, tmp_path / "fp16", precision="fp16", ema=0.9))
    assert result.best_top1 is not None and result.best_top1 > 0.5
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "fp16" / "checkpoints")[-1])
    scaler = state["scaler"]
    assert scaler and scaler["scale"] > 0  # an enabled GradScaler's state
    assert "ema" in state


def test_compile_and_grad_checkpointing_on_cuda(image_folder, tmp_path):
    result = finetune(_config(image_folder, tmp_path / "compiled", precision="bf16",
                              compile=True, grad_checkpointing=True, epochs=2))  # fmt: skip
    assert result.compile_time_s is not None and result.best_top1 is not None


# ---------------------------------------------------------------------- resume after a kill
def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "gfnet_cli", *[str(a) for a in args]]


def _assert_kill_and_resume_is_bit_identical(common: list, tmp_path: Path) -> None:
    """Run ``common`` through; run it again, SIGKILL it after its first checkpoint and resume
    it: with --deterministic both MODELs must be equal bit for bit."""
    done = subprocess.run(_cli(*common, "--output-dir", tmp_path / "ref"), env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cut = tmp_path / "cut"
    process = subprocess.Popen(_cli(*common, "--output-dir", cut), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    assert _wait_for_checkpoint(process, cut, timeout=300), "ended before its first checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    resumed = subprocess.run(_cli(*common, "--output-dir", cut, "--resume"), env=_env(),
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((cut / "train_results.json").read_text())["resumed_from_step"] > 0
    first = load_file(str(tmp_path / "ref" / "model.safetensors"))
    second = load_file(str(cut / "model.safetensors"))
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"not bit-identical with --deterministic: {different[:5]}"


def test_resume_after_a_kill_on_cuda_gives_the_same_weights(image_folder, tmp_path):
    common = ["finetune", "--model", "gfnet-ti", "--from-scratch", "--patch-size", "8",
              "--embed-dim", "32", "--depth", "2", "--img-size", "32", "--dataset", image_folder,
              "--epochs", "3", "--batch-size", "4", "--checkpoint-every", "3", "--drop-path",
              "0.2", "--num-workers", "1", "--device", "cuda", "--precision", "bf16",
              "--randaugment", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--ema", "0.9",
              "--accumulate", "2", "--deterministic"]  # fmt: skip
    _assert_kill_and_resume_is_bit_identical(common, tmp_path)


# ---------------------------------------------------------------------- inference commands
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpu_model")
    config = GFNetConfig(patch_size=8, embed_dim=32, depth=2, img_size=32, num_classes=3,
                         class_names=list(CLASSES))  # fmt: skip
    torch.manual_seed(0)
    save_model(create_model(config), folder)
    return folder


def test_evaluate_on_cuda_matches_the_cpu(tiny_model, image_folder):
    on_gpu = evaluate(str(tiny_model), str(image_folder), device="cuda", num_workers=0)
    on_cpu = evaluate(str(tiny_model), str(image_folder), device="cpu", num_workers=0)
    assert on_gpu.num_samples == on_cpu.num_samples == 12
    assert on_gpu.top1 == on_cpu.top1
    assert on_gpu.loss == pytest.approx(on_cpu.loss, abs=1e-4)
    bf16 = evaluate(str(tiny_model), str(image_folder), device="cuda", precision="bf16",
                    num_workers=0)  # fmt: skip
    assert bf16.loss == pytest.approx(on_cpu.loss, abs=5e-2)


def test_predict_on_cuda_matches_the_cpu(tiny_model, image_folder):
    images = sorted((image_folder / "test").rglob("*.png"))
    on_gpu = predict(images, str(tiny_model), top_k=3, device="cuda")
    on_cpu = predict(images, str(tiny_model), top_k=3, device="cpu")
    for gpu, cpu in zip(on_gpu, on_cpu, strict=True):
        assert gpu.ok and [p["index"] for p in gpu.predictions] == [
            p["index"] for p in cpu.predictions
        ]
        for a, b in zip(gpu.predictions, cpu.predictions, strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_profile_on_cuda_measures_speed_and_peak_memory(precision):
    options = ProfileOptions(batch_size=8, device="cuda", precision=precision, warmup=1,
                             repeats=3)  # fmt: skip
    (row,) = profile("gfnet-ti", [224], options=options)
    assert row.error is None and row.device.startswith("cuda")
    assert row.images_per_second > 0 and row.peak_memory_mb > 0


# ---------------------------------------------------------------------- NCCL via torchrun
def test_nccl_group_through_torchrun_with_one_process(image_folder, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node", "1", str(HERE / "nccl_probe.py"),
               str(image_folder), str(tmp_path / "ddp")]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "cpu:gloo" in report["backends"] and "cuda:nccl" in report["backends"]
    assert report["cpu_sum"] == [1.0, 2.0] and report["gpu_sum"] == [3.0, 4.0]
    assert report["gathered"] == [{"rank": 0}] and report["world_size"] == 1
    # 48 images, micro-batches of 4, 2 per step: 6 steps an epoch
    assert report["global_step"] == 12 and report["best_top1"] is not None
    assert report["group_still_up"]  # finetune left the caller's group alone


# ---------------------------------------------------------------------- issue 15 on a GPU
def test_resuming_in_fp16_from_fp32_and_bf16_checkpoints(image_folder, tmp_path):
    """A precision change on resume keeps the run and starts a fresh fp16 loss scale (was:
    RuntimeError loading the disabled scaler's empty state into an enabled GradScaler)."""
    for before in ("fp32", "bf16"):
        out = tmp_path / before
        finetune(_config(image_folder, out, epochs=1, precision=before))
        result = finetune(_config(image_folder, out, epochs=2, precision="fp16", resume=True))
        assert result.resumed_from_step > 0 and result.epochs == 2
        state = ckpt.load_checkpoint(ckpt.list_checkpoints(out / "checkpoints")[-1])
        assert state["precision"] == "fp16" and state["scaler"]["scale"] > 0


def test_resume_on_an_explicit_gpu_index_gives_the_same_weights(image_folder, tmp_path):
    """--device cuda:N in one process: N is made the current device, so the drop-path masks
    and the checkpointed CUDA generator are the same GPU's (was: cuda:0's saved while
    cuda:N's drew). The last GPU: cuda:1 or higher where there are several, else cuda:0
    through the same code path."""
    index = torch.cuda.device_count() - 1
    common = ["finetune", "--model", "gfnet-ti", "--from-scratch", "--patch-size", "8",
              "--embed-dim", "32", "--depth", "2", "--img-size", "32", "--dataset", image_folder,
              "--epochs", "2", "--batch-size", "4", "--checkpoint-every", "3", "--drop-path",
              "0.3", "--num-workers", "1", "--device", f"cuda:{index}",
              "--deterministic"]  # fmt: skip
    _assert_kill_and_resume_is_bit_identical(common, tmp_path)
    finetune(_config(image_folder, tmp_path / "inproc", epochs=1, device=f"cuda:{index}"))
    assert torch.cuda.current_device() == index


def test_out_of_range_labels_stop_on_the_host_not_in_a_device_assert(tmp_path):
    """An eval label the training split never had, streamed so only the batch check can see
    it: a one-line UsageError, and the CUDA context is still usable afterwards (a device-side
    assert would have poisoned it)."""
    dataset = _labelled(tmp_path, "data", [0, 1, 0, 1], [0, 7], test_class_label=False)
    with pytest.raises(UsageError, match=r"\[test\]: label 7 is out of range"):
        finetune(_config(dataset, tmp_path / "out", epochs=1, batch_size=2, streaming=True,
                         num_workers=0))  # fmt: skip
    config = GFNetConfig(patch_size=8, embed_dim=32, depth=2, img_size=32, num_classes=2)
    model = save_model(create_model(config), tmp_path / "model")
    with pytest.raises(UsageError, match="label 7 is out of range"):
        evaluate(str(model), str(dataset), split="test", device="cuda", num_workers=0,
                 streaming=True)  # fmt: skip
    assert torch.ones(4, device="cuda").sum().item() == 4.0


def test_a_batch_of_unreadable_images_on_cuda(tmp_path):
    root = tmp_path / "data"
    for index, name in enumerate(("cat", "dog")):
        _write_images(root / "train" / name, 3, index, seed=0)
        _write_images(root / "test" / name, 2, index, seed=1)
    (root / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    (root / "test" / "dog" / "broken.png").write_bytes(b"not an image")
    result = finetune(_config(root, tmp_path / "out", epochs=2, batch_size=1, num_workers=0,
                              precision="fp16"))  # fmt: skip
    assert result.global_step == 14 and result.best_top1 is not None


def _torchrun_gfnet(nproc: int, image_folder: Path, out: Path, device: str,
                    **env: str) -> subprocess.CompletedProcess:  # fmt: skip
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node", str(nproc), "-m", "gfnet_cli",
               "finetune", "--model", "gfnet-ti", "--from-scratch", "--patch-size", "8",
               "--embed-dim", "32", "--depth", "2", "--img-size", "32", "--dataset",
               str(image_folder), "--output-dir", str(out), "--epochs", "1", "--device",
               device]  # fmt: skip
    return subprocess.run(command, env=_env() | env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_torchrun_refuses_processes_sharing_a_gpu(image_folder, tmp_path):
    gpus = torch.cuda.device_count()
    more = _torchrun_gfnet(gpus + 1, image_folder, tmp_path / "more", "cuda")
    assert more.returncode != 0
    assert f"{gpus + 1} processes on this machine but {gpus} GPU(s)" in more.stderr
    assert "Traceback" not in more.stderr.split("ChildFailedError")[0]
    # both processes given the one GPU 0: each sees one GPU, so only the UUIDs tell
    shared = _torchrun_gfnet(2, image_folder, tmp_path / "shared", "cuda",
                             CUDA_VISIBLE_DEVICES="0")  # fmt: skip
    assert shared.returncode != 0 and "processes 0 and 1 would train on one GPU" in shared.stderr
    same = _torchrun_gfnet(2, image_folder, tmp_path / "same", "cuda:0")
    assert same.returncode != 0 and "--device cuda:0: every one of the 2" in same.stderr
    assert not (tmp_path / "more" / "checkpoints").exists()


# ---------------------------------------------------------------------- host/device traffic
def test_dataloader_batches_arrive_pinned(image_folder):
    from torch.utils.data import DataLoader

    from gfnet_cli.data.datasets import (
        TorchImageDataset,
        collate_skipping_failures,
        load_image_dataset,
    )
    from gfnet_cli.data.transforms import eval_transform

    data = load_image_dataset(str(image_folder), "test")
    config = GFNetConfig(patch_size=8, embed_dim=32, depth=2, img_size=32)
    view = TorchImageDataset(data, eval_transform(config), None)
    for workers in (0, 2):
        loader = DataLoader(view, batch_size=4, num_workers=workers, pin_memory=True,
                            collate_fn=collate_skipping_failures)  # fmt: skip
        batch = next(iter(loader))
        assert batch.images.is_pinned() and batch.labels.is_pinned()
        images, labels = batch.rows_to(torch.device("cuda"))
        assert images.is_cuda and torch.equal(labels.cpu(), batch.labels)


def _sync_warnings(run) -> int:
    """Synchronizing CUDA calls made by ``run()`` (torch's sync debug mode, as warnings)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


def test_a_training_step_waits_for_the_gpu_once(image_folder, tmp_path):
    """Eight more steps of the same run cost at most eight more host syncs (the loss read)."""
    def run(steps: int, name: str) -> None:
        finetune(_config(image_folder, tmp_path / name, epochs=1, max_steps=steps, batch_size=2,
                         num_workers=0))  # fmt: skip

    run(2, "warm")  # CUDA, cuFFT plans and the allocator warmed up
    few = _sync_warnings(lambda: run(4, "few"))
    many = _sync_warnings(lambda: run(12, "many"))
    assert many - few <= 8, f"{few} syncs for 4 steps, {many} for 12"


def test_evaluation_reads_the_gpu_once_not_per_batch(tiny_model, image_folder):
    from gfnet_cli.data.datasets import TorchImageDataset, load_image_dataset
    from gfnet_cli.data.transforms import eval_transform
    from gfnet_cli.engine.train.data import _loader
    from gfnet_cli.engine.train.loop import _evaluate
    from gfnet_cli.hub.resolve import load_model

    model = load_model(str(tiny_model)).cuda()
    data = load_image_dataset(str(image_folder), "train")  # 48 images
    view = TorchImageDataset(data, eval_transform(model.config), None)
    config = _config(image_folder, Path("unused"), num_workers=0)

    def evaluate_with(batch_size: int) -> None:
        loader = _loader(view, None, config, torch.device("cuda"), batch_size=batch_size)
        _evaluate(model, loader, torch.device("cuda"), "fp32")

    evaluate_with(48)  # warm-up: cuFFT plans for both batch sizes, the allocator
    evaluate_with(4)
    one_batch = _sync_warnings(lambda: evaluate_with(48))
    twelve = _sync_warnings(lambda: evaluate_with(4))
    assert twelve == one_batch, f"{one_batch} syncs for one batch, {twelve} for twelve"


def test_checkpoint_state_comes_to_the_host_in_one_pass():
    state = {"model": {"w": torch.randn(64, device="cuda")}, "step": torch.tensor(3.0),
             "moments": [torch.randn(8, 8, device="cuda") for _ in range(20)]}  # fmt: skip
    syncs = _sync_warnings(lambda: ckpt.to_host(state))
    moved = ckpt.to_host(state)
    assert syncs <= 1
    assert moved["model"]["w"].device.type == "cpu" and moved["step"] is state["step"]
    assert torch.equal(moved["model"]["w"], state["model"]["w"].cpu())
    assert all(torch.equal(a, b.cpu()) for a, b in zip(moved["moments"], state["moments"],
                                                      strict=True))  # fmt: skip


# ---------------------------------------------------------------------- compiled profiling
def test_profile_compile_measures_the_compiled_model_at_another_size(monkeypatch):
    import gfnet_cli.commands.profile as profiling

    measured = []
    original = profiling._cuda_peak_mb

    def recording(model, inputs, precision):
        measured.append(model)
        return original(model, inputs, precision)

    monkeypatch.setattr(profiling, "_cuda_peak_mb", recording)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    options = ProfileOptions(batch_size=4, device="cuda", precision="bf16", warmup=1, repeats=3,
                             compile=True)  # fmt: skip
    (row,) = profile("gfnet-ti", [288], options=options)  # native: 224
    assert row.error is None and row.peak_memory_mb > 0 and row.compile_s is not None
    assert isinstance(measured[0], torch._dynamo.eval_frame.OptimizedModule)
    counters = torch._dynamo.utils.counters
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_bf16_precision_check_follows_the_gpu():
    from gfnet_cli.device import check_precision

    native = torch.cuda.get_device_capability(0)[0] >= 8
    if native:
        assert check_precision(torch.device("cuda", 0), "bf16") == "bf16"
    else:
        with pytest.raises(Exception, match="native bfloat16"):
            check_precision(torch.device("cuda", 0), "bf16")
