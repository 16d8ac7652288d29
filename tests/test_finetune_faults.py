"""gfnet finetune against faulty data and launch settings: a batch whose images are all
unreadable, labels outside the classes, precision changed on resume, devices under torchrun,
and the wait for rank 0's data preparation (issue 15; the GPU side is in tests/gpu)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gfnet_cli import create_model
from gfnet_cli.commands.evaluate import evaluate
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine import distributed
from gfnet_cli.engine.train import finetune
from gfnet_cli.engine.train.state import resume_scaler
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models.config import GFNetConfig
from tests.conftest import assert_one_line_error
from tests.test_finetune import TINY_ARGS, _config, _env, _write_images

CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def corrupt_folder(tmp_path_factory) -> Path:
    """Two classes, 3 train and 2 test images each, plus one unreadable file in each split."""
    root = tmp_path_factory.mktemp("corrupt_dataset")
    for index, name in enumerate(CLASSES):
        _write_images(root / "train" / name, 3, index, seed=0)
        _write_images(root / "test" / name, 2, index, seed=1)
    (root / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    (root / "test" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def _metric_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------- unreadable batches
def test_a_batch_of_unreadable_images_neither_crashes_nor_counts(run_cli, corrupt_folder,
                                                                 tmp_path):  # fmt: skip
    # batch size 1: the unreadable file is a batch with no image at all, in training and in
    # evaluation (was: IndexError in the model, which indexed the shape of torch.empty(0))
    out = tmp_path / "out"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", corrupt_folder, "--output-dir", out,
                     "--batch-size", "1", "--epochs", "2", "--log-every", "1",
                     "--eval-split", "test")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    results = json.loads((out / "train_results.json").read_text())
    assert results["global_step"] == 14  # 7 files an epoch, one step each
    assert results["unreadable_train_images"] == 2  # the broken file, once an epoch
    told = " ".join(result.stderr.split())  # and the user is told which
    assert "skipped unreadable image 3" in told and "broken.png" in told
    lines = _metric_lines(out)
    train = [line for line in lines if line["type"] == "train"]
    # the empty steps write no loss line: a loss of 0 would be a lie about a step without data
    assert len(train) == 12 and all(0 < line["loss"] < 5 for line in train)
    evals = [line for line in lines if line["type"] == "eval"]
    assert len(evals) == 2
    for line in evals:  # scored over the 4 readable test images, the broken one not counted
        assert line["top1"] * 4 == pytest.approx(round(line["top1"] * 4))
        assert np.isfinite(line["eval_loss"]) and 0 < line["train_loss"] < 5


@pytest.mark.slow
def test_torchrun_where_one_rank_gets_only_unreadable_images(corrupt_folder, tmp_path):
    """One unreadable file, batch size 1, two processes: at some step one rank's batch is
    empty and the other's is not. The empty rank runs a zero-weighted stand-in through
    forward and backward, so both reach every gradient all-reduce and finish."""
    torchrun = Path(sys.executable).with_name("torchrun")
    gfnet = Path(sys.executable).with_name("gfnet")
    if not torchrun.exists() or not gfnet.exists():
        pytest.skip("torchrun or the gfnet script is not installed beside this Python")
    out = tmp_path / "ddp"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python", str(gfnet),
               "finetune", *TINY_ARGS, "--dataset", str(corrupt_folder), "--output-dir",
               str(out), "--epochs", "2", "--batch-size", "1", "--device", "cpu",
               "--log-every", "1", "--eval-split", "test"]  # fmt: skip
    done = subprocess.run(command, env=_env() | {"OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "train_results.json").read_text())
    # 7 files over 2 processes: 4 each (the sampler pads), one per step
    assert results["world_size"] == 2 and results["global_step"] == 8
    assert results["unreadable_train_images"] >= 2  # summed over the processes
    train = [line for line in _metric_lines(out) if line["type"] == "train"]
    assert len(train) == 8 and all(np.isfinite(line["loss"]) for line in train)
    assert results["best_top1"] is not None


# ---------------------------------------------------------------------- label ranges
def _labelled(tmp_path: Path, name: str, train: list, test: list, *, class_label: bool = True,
              test_class_label: bool | None = None,
              test_names: list[str] | None = None) -> Path:  # fmt: skip
    """A save_to_disk dataset of plain images with the given labels (None: missing); the
    classes are c0 and c1, or ``test_names`` in the test split."""
    import datasets

    image = Image.new("RGB", (32, 32), (200, 10, 10))

    def split(labels: list, named: bool, names: list[str] | None = None) -> datasets.Dataset:
        label = (datasets.ClassLabel(names=names or ["c0", "c1"]) if named
                 else datasets.Value("int64"))  # fmt: skip
        features = datasets.Features({"image": datasets.Image(), "label": label})
        return datasets.Dataset.from_dict({"image": [image] * len(labels), "label": labels},
                                          features=features)  # fmt: skip

    named_test = class_label if test_class_label is None else test_class_label
    folder = tmp_path / name
    datasets.DatasetDict({"train": split(train, class_label),
                          "test": split(test, named_test, test_names)}
                         ).save_to_disk(str(folder))  # fmt: skip
    return folder


@pytest.mark.parametrize(
    ("train", "test", "named", "streaming", "message"),
    [
        # a training sample without a label (ClassLabel's -1): refused before any step
        ([0, 1, -1, 0], [0, 1], True, False, "[train]: label -1"),
        # the same, streamed: found in the batch, on the host, before the device sees it
        ([0, 1, -1, 0], [0, 1], True, True, "[train]: label -1"),
        # an evaluation label the training split never had (classes 0 and 1 from the values)
        ([0, 1, 0, 1], [0, 1, 5], False, False, "[test]: label 5 is out of range"),
    ],
)
def test_out_of_range_labels_exit_2_naming_the_label(run_cli, tmp_path, train, test, named,
                                                     streaming, message):  # fmt: skip
    dataset = _labelled(tmp_path, "data", train, test, class_label=named)
    extra = ["--streaming", "--num-workers", "0"] if streaming else []
    result = run_cli("finetune", *TINY_ARGS, "--dataset", dataset, "--output-dir",
                     tmp_path / "out", "--epochs", "1", "--batch-size", "2", *extra)  # fmt: skip
    assert_one_line_error(result, 2, message)
    assert "data [" in result.stderr  # the dataset is named too


def test_a_streamed_evaluation_label_out_of_range_is_found_on_the_host(tmp_path):
    # ClassLabel training split, an int eval column: only the batch check can see label 7
    dataset = _labelled(tmp_path, "data", [0, 1, 0, 1], [0, 7], test_class_label=False)
    config = _config(dataset, tmp_path / "out", epochs=1, batch_size=2, streaming=True)
    with pytest.raises(Exception) as error:
        finetune(config)
    assert "[test]: label 7 is out of range" in str(error.value)
    assert error.value.param == "eval_split" and error.value.exit_code == 2


def test_evaluate_names_an_out_of_range_label_and_the_split(run_cli, tmp_path):
    config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=2)
    model = save_model(create_model(config), tmp_path / "model")
    dataset = _labelled(tmp_path, "data", [0, 1], [0, 1, 4], class_label=False)
    for streaming in ([], ["--streaming"]):  # up front, and batch by batch for a stream
        result = run_cli("evaluate", "--model", model, "--dataset", dataset, "--split", "test",
                         "--num-workers", "0", *streaming)  # fmt: skip
        assert_one_line_error(result, 2, "label 4 is out of range")
        assert "data [test]" in result.stderr
    with pytest.raises(Exception, match="label 4"):
        evaluate(str(model), str(dataset), split="test", num_workers=0, streaming=True)


# ---------------------------------------------------------------------- precision on resume
@pytest.fixture(scope="module")
def fp32_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of an fp32 run on the CPU (its loss scaler disabled: state {})."""
    root = tmp_path_factory.mktemp("fp32_run")
    for index, name in enumerate(CLASSES):
        _write_images(root / "data" / "train" / name, 4, index, seed=0)
        _write_images(root / "data" / "test" / name, 2, index, seed=1)
    finetune(_config(root / "data", root / "out", epochs=1, device="cpu"))
    return ckpt.list_checkpoints(root / "out" / "checkpoints")[-1]


def test_fp16_resuming_an_fp32_checkpoint_starts_a_fresh_loss_scale(fp32_checkpoint, caplog):
    """The scaler logic of a resume into fp16 with the real GradScaler. fp16 training itself
    needs a GPU (refused on the CPU), so the end-to-end run is tests/gpu's; torch's CPU
    GradScaler behaves as the CUDA one here (was: RuntimeError, 'the source state dict is
    empty', from loading the disabled scaler's {} into an enabled one)."""
    saved = ckpt.load_checkpoint(fp32_checkpoint)
    assert saved["scaler"] == {} and saved["precision"] == "fp32"
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    with caplog.at_level(logging.WARNING):
        resume_scaler(scaler, saved, "fp16", fp32_checkpoint)
    assert scaler.get_scale() == 65536.0  # GradScaler's initial scale
    assert "precision fp32; continuing in fp16" in caplog.text
    assert "no fp16 loss scale" in caplog.text


def test_an_fp16_loss_scale_is_kept_and_dropped_when_leaving_fp16(fp32_checkpoint, caplog):
    path = fp32_checkpoint
    trained = torch.amp.GradScaler("cpu", init_scale=512.0, enabled=True)
    saved = {"scaler": trained.state_dict(), "precision": "fp16"}
    again = torch.amp.GradScaler("cpu", enabled=True)
    with caplog.at_level(logging.WARNING):
        resume_scaler(again, saved, "fp16", path)
    assert again.get_scale() == 512.0 and caplog.text == ""  # same precision: exact resume
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    resume_scaler(disabled, saved, "bf16", path)  # bf16 needs no scale: nothing loaded
    assert not disabled.is_enabled() and "continuing in bf16" in caplog.text
    old = {"scaler": {}}  # a checkpoint from before the precision was recorded
    resume_scaler(torch.amp.GradScaler("cpu", enabled=True), old, "fp16", path)


def test_resume_with_another_precision_continues_the_run(run_cli, image_folder_2, tmp_path):
    out = tmp_path / "run"
    first = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder_2, "--output-dir", out,
                    "--epochs", "1", "--batch-size", "4", "--device", "cpu")  # fmt: skip
    assert first.exit_code == 0, first.stderr
    resumed = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder_2, "--output-dir", out,
                      "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--precision",
                      "bf16", "--resume")  # fmt: skip
    assert resumed.exit_code == 0, resumed.stderr
    assert "continuing in bf16" in " ".join(resumed.stderr.split())
    results = json.loads((out / "train_results.json").read_text())
    assert results["resumed_from_step"] == 2 and results["global_step"] == 4
    last = ckpt.load_checkpoint(ckpt.list_checkpoints(out / "checkpoints")[-1])
    assert last["precision"] == "bf16"


@pytest.fixture(scope="module")
def image_folder_2(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two_classes")
    for index, name in enumerate(CLASSES):
        _write_images(root / "train" / name, 4, index, seed=0)
        _write_images(root / "test" / name, 2, index, seed=1)
    return root


# ---------------------------------------------------------------------- devices of processes
@pytest.mark.parametrize(
    ("requested", "local_rank", "world_size", "gpus", "local_world_size", "visible", "refused"),
    [
        ("cuda:1", 0, 2, 2, None, None, "every one of the 2 processes would train on that one"),
        ("CUDA:1", 0, 2, 0, None, None, "every one of the 2 processes"),  # without a GPU too
        ("cuda:0", 0, 2, 2, None, None, None),  # this process's own GPU (device=f"cuda:{rank}")
        ("cuda", 2, 3, 2, 3, None, "3 processes on this machine but 2 GPU(s)"),
        ("auto", 0, 4, 2, 4, None, "--nproc_per_node 2"),  # every process refuses, rank 0 too
        ("cuda", 2, 3, 2, None, None, "3 processes on this machine"),  # no LOCAL_WORLD_SIZE
        ("cuda", 1, 4, 2, 2, None, None),  # two machines of two GPUs
        ("cuda", 3, 16, 8, None, None, None),  # srun on two machines: no LOCAL_WORLD_SIZE
        # each process given its own GPU through CUDA_VISIBLE_DEVICES: it sees one, cuda:0
        ("cuda", 3, 4, 1, 4, "3", None),
        ("cuda", 1, 2, 1, 2, "0,1", "2 processes on this machine but 1 GPU(s)"),
        ("auto", 1, 2, 0, 2, None, None),  # no GPU: the CPU, gloo
        ("cpu", 1, 8, 2, 8, None, None),
        ("cuda:1", 0, 1, 2, None, None, None),  # one process may take any GPU
    ],
)
def test_processes_never_share_a_gpu(requested, local_rank, world_size, gpus, local_world_size,
                                     visible, refused):  # fmt: skip
    args = (requested, local_rank, world_size, gpus, local_world_size, visible)
    if refused is None:
        distributed.check_rank_device(*args)
        return
    with pytest.raises(UsageError) as error:
        distributed.check_rank_device(*args)
    assert refused in str(error.value) and error.value.param == "device"


def test_more_processes_than_gpus_exit_2_before_joining(run_cli, image_folder_2, tmp_path,
                                                        monkeypatch):  # fmt: skip
    """What torchrun --nproc_per_node 2 gives rank 1 on a one-GPU machine (the GPU count
    answered by a stand-in: this machine has none): refused before init_process_group."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1",
                        "LOCAL_WORLD_SIZE": "2"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder_2, "--output-dir", out,
                     "--device", "cuda")  # fmt: skip
    assert_one_line_error(result, 2, "2 processes on this machine but 1 GPU(s)")
    assert not out.exists()


@pytest.mark.parametrize(
    ("gpu_ids", "shared"),
    [
        (["GPU-a", "GPU-b"], []),
        (["GPU-a", "GPU-b", "GPU-a"], [[0, 2]]),  # 3 processes, 2 GPUs
        (["GPU-a"] * 3 + ["GPU-b"] * 2, [[0, 1, 2], [3, 4]]),
        # each process sees one GPU, cuda:0, through its own CUDA_VISIBLE_DEVICES: no sharing
        (["GPU-a", "GPU-b", "GPU-c", "GPU-d"], []),
        ([], []),
    ],
)
def test_processes_sharing_a_gpu_are_found_by_its_uuid(gpu_ids, shared):
    assert distributed.shared_gpus(gpu_ids) == shared


def test_torchrun_with_an_explicit_gpu_exits_2_before_joining(run_cli, image_folder_2, tmp_path,
                                                              monkeypatch):  # fmt: skip
    # what torchrun gives rank 1 of 2; refused before init_process_group (which would wait
    # for the other process) and before anything is written
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1",
                        "LOCAL_WORLD_SIZE": "2"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder_2, "--output-dir", out,
                     "--device", "cuda:0")  # fmt: skip
    assert_one_line_error(result, 2, "--device cuda:0: every one of the 2 processes")
    assert "use --device cuda" in result.stderr and not out.exists()


def test_one_process_on_an_explicit_gpu_makes_it_the_current_device(monkeypatch):
    """``--device cuda:1`` without torchrun: drop path draws from the current device's
    generator, which a checkpoint saves, so GPU 1 must be current (was: set only under
    torchrun, so cuda:0's generator was saved while cuda:1's was used). With the GPU calls
    recorded instead of made: this machine has none (tests/gpu runs it for real)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.setup("cuda:1")
    assert info.device == torch.device("cuda", 1) and not info.distributed
    assert calls == [torch.device("cuda", 1)]
    distributed.setup("cpu")
    assert calls == [torch.device("cuda", 1)]  # the CPU changes nothing


# ---------------------------------------------------------------------- waiting for rank 0
def _probe(out: Path, *args: float) -> tuple[subprocess.CompletedProcess, list[dict]]:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).with_name("prepare_wait_probe.py")), *map(str, args),
               str(out)]  # fmt: skip
    done = subprocess.run(command, env=_env() | {"OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    return done, [json.loads(path.read_text()) for path in sorted(out.glob("rank-*.json"))]


@pytest.mark.slow
def test_the_wait_for_rank_0_outlasts_the_training_groups_timeout(tmp_path):
    # rank 0 prepares for 5 s; the default group's timeout is 2 s, the wait's 1 minute
    done, lines = _probe(tmp_path, 5, 1, 2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(line["rank"] for line in lines) == [0, 1]
    assert all(line["ok"] and line["waited"] >= 4.5 for line in lines)


@pytest.mark.slow
def test_the_wait_for_rank_0_ends_at_prepare_timeout_with_a_message(tmp_path):
    # rank 0 prepares for 20 s; the wait is 3 s (0.05 minutes), the default group's 60 s
    started = time.monotonic()
    done, lines = _probe(tmp_path, 20, 0.05, 60)
    assert done.returncode != 0 and time.monotonic() - started < 19
    (failed,) = [line for line in lines if line["rank"] == 1]
    assert failed["param"] == "prepare_timeout"
    assert "did not finish preparing the data within 0.05 minutes" in failed["error"]


def test_prepare_timeout_must_be_positive(run_cli, image_folder_2, tmp_path):
    out = tmp_path / "out"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder_2, "--output-dir", out,
                     "--prepare-timeout", "0")  # fmt: skip
    assert_one_line_error(result, 2, "--prepare-timeout must be a positive number of minutes")
    assert not out.exists()


def test_evaluation_classes_training_lacks_are_named_and_skipped(run_cli, tmp_path):
    folder = _labelled(tmp_path, "data", [0, 1, 0, 1], [0, 1, 2, 2],
                       test_names=["c0", "c1", "fox"])  # fox: never seen in training
    out = tmp_path / "out"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", folder, "--output-dir", out,
                     "--epochs", "1", "--eval-split", "test")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    told = " ".join(result.stderr.split())
    assert "has 1 class(es) the training split lacks ('fox')" in told
    assert json.loads((out / "train_results.json").read_text())["num_eval_samples"] == 4
    evals = [line for line in _metric_lines(out) if line["type"] == "eval"]
    assert evals[-1]["top1"] * 2 == round(evals[-1]["top1"] * 2)  # scored over the 2 others
