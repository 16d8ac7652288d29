"""gfnet finetune --streaming: training from a datasets IterableDataset, exact resume, checks."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine.train import TrainCallbacks, TrainingInterruptedError, finetune
from tests.conftest import assert_one_line_error
from tests.test_finetune import (
    CLASSES,
    TINY_ARGS,
    _assert_same_weights,
    _config,
    _env,
    _run_killed_and_resumed,
    _write_images,
)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _rows(count: int, seed: int, label: bool = True, classes: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        array = rng.integers(0, 60, size=(24, 28, 3), dtype=np.uint8)
        array[..., i % 3] += 150
        images.append({"bytes": _png(array), "path": None})
        labels.append(i % classes)
    return {"image": images, "label": labels} if label else {"image": images}


def _saved(folder: Path, *, label: bool = True, classes: int = 3, train_rows: int = 24) -> Path:
    import datasets

    features = {"image": datasets.Image()}
    if label:
        features["label"] = datasets.ClassLabel(names=CLASSES[:classes])
    splits = {
        "train": _rows(train_rows, 0, label, classes),
        "test": _rows(6, 1, label, classes),
    }
    datasets.DatasetDict(
        {
            k: datasets.Dataset.from_dict(v, features=datasets.Features(features))
            for k, v in splits.items()
        }  # fmt: skip
    ).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory) -> Path:
    """24 train and 6 test rows of tiny PNG bytes with a 3-class ClassLabel."""
    return _saved(tmp_path_factory.mktemp("stream") / "saved")


def test_streaming_trains_and_writes_a_model(run_cli, saved_dataset, tmp_path):
    out = tmp_path / "run"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", saved_dataset, "--output-dir", out,
                     "--streaming", "--epochs", "2", "--batch-size", "4", "--shuffle-buffer",
                     "8", "--json", "--eval-split", "test")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    results = json.loads((out / "train_results.json").read_text())
    # one process, no workers: 24 rows in batches of 4 make exactly 6 steps an epoch
    assert results["global_step"] == 12 and results["epochs"] == 2
    assert results["num_train_samples"] == 24 and results["num_eval_samples"] == 6
    assert results["hyperparameters"]["streaming"] is True
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert json.loads((out / "config.json").read_text())["class_names"] == CLASSES
    assert result.json()["global_step"] == 12


def test_streaming_max_steps_bounds_the_run(saved_dataset, tmp_path):
    result = finetune(_config(saved_dataset, tmp_path / "m", streaming=True, max_steps=3,
                              epochs=5))  # fmt: skip
    assert result.global_step == 3 and result.epochs == 1


def test_streaming_unknown_size_needs_max_steps(run_cli, tmp_path):
    folder = tmp_path / "images"  # an image folder streams without a recorded size
    for index, name in enumerate(CLASSES):
        _write_images(folder / "train" / name, 3, index, seed=0)
    out = tmp_path / "out"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", folder, "--output-dir", out,
                     "--streaming")  # fmt: skip
    assert_one_line_error(result, 2, "pass --max-steps")
    assert not (out / "checkpoints").exists()
    done = run_cli("finetune", *TINY_ARGS, "--dataset", folder, "--output-dir", out,
                   "--streaming", "--max-steps", "2", "--batch-size", "4")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert json.loads((out / "train_results.json").read_text())["num_train_samples"] is None


@pytest.mark.parametrize(
    ("label", "classes", "message"),
    [(False, 3, "no label column"), (True, 1, "at least 2")],
)
def test_streaming_preflight_errors(run_cli, tmp_path, label, classes, message):
    dataset = _saved(tmp_path / "bad", label=label, classes=classes, train_rows=4)
    out = tmp_path / "out"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", dataset, "--output-dir", out,
                     "--streaming")  # fmt: skip
    assert_one_line_error(result, 2, message)
    assert not (out / "checkpoints").exists()


class _CtrlCAt(TrainCallbacks):
    """Sends this process SIGINT after step ``step``: the loop checkpoints and stops."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step: int, epoch: int, loss: float, lr: float, ips: float) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def _final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(folder / "checkpoints")[-1])["model"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_interrupted_then_resumed_gives_the_same_weights(saved_dataset, tmp_path,
                                                                   workers):  # fmt: skip
    # batch 5: with 2 workers (12 rows each) every worker ends an epoch on a partial batch,
    # and stopping at epoch 2, step 3 leaves worker 1 next in the round-robin. (Ctrl-C during
    # a step stops after the next one.)
    def config(out: Path, **changes):
        return _config(saved_dataset, out, streaming=True, num_workers=workers, batch_size=5,
                       epochs=3, shuffle_buffer=7, drop_path=0.2, **changes)  # fmt: skip

    reference = finetune(config(tmp_path / "ref"))
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterruptedError):
        finetune(config(cut), _CtrlCAt(reference.global_step // 3 + 2))
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(cut / "checkpoints")[-1])
    assert state["step_in_epoch"] == 3
    assert state["stream"][0]["next_worker"] == (1 if workers == 2 else 0)
    resumed = finetune(config(cut, resume=True))
    assert resumed.resumed_from_step == state["global_step"]
    assert resumed.global_step == reference.global_step
    _assert_same_weights(tmp_path / "ref", cut)
    first, second = _final_weights(tmp_path / "ref"), _final_weights(cut)
    assert max((first[k] - second[k]).abs().max().item() for k in first) <= 1e-6


def test_streaming_resume_refuses_another_worker_count(saved_dataset, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingInterruptedError):
        finetune(_config(saved_dataset, out, streaming=True, epochs=1), _CtrlCAt(2))
    with pytest.raises(ckpt.CheckpointError, match="num_workers"):
        finetune(_config(saved_dataset, out, streaming=True, epochs=1, num_workers=2,
                         resume=True))  # fmt: skip


@pytest.mark.slow
def test_streaming_sigkill_then_resume_gives_the_same_weights(saved_dataset, tmp_path):
    common = [*TINY_ARGS[:-2], "--dataset", saved_dataset, "--streaming", "--epochs", "2",
              "--batch-size", "3", "--checkpoint-every", "3", "--drop-path", "0.2",
              "--num-workers", "2", "--shuffle-buffer", "5"]  # fmt: skip
    ref, cut = _run_killed_and_resumed(common, tmp_path)
    assert json.loads((cut / "train_results.json").read_text())["resumed_from_step"] >= 3
    _assert_same_weights(ref, cut)


@pytest.mark.slow
def test_streaming_torchrun_two_processes_with_unequal_streams(tmp_path):
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    gfnet = Path(sys.executable).with_name("gfnet")
    if not torchrun.exists() or not gfnet.exists():
        pytest.skip("torchrun or the gfnet script is not installed beside this Python")
    # 15 rows in 15 shards over 2 processes: 8 and 7 rows, so batches of 7 give one process
    # 2 batches and the other 1; the epoch must end for both after 1 step (no hang).
    dataset = _saved(tmp_path / "odd", train_rows=15)
    out = tmp_path / "ddp"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python", str(gfnet),
               "finetune", *TINY_ARGS, "--dataset", str(dataset), "--output-dir", str(out),
               "--streaming", "--epochs", "2", "--batch-size", "7", "--device", "cpu",
               "--eval-split", "test"]  # fmt: skip
    done = subprocess.run(command, env=_env() | {"OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "train_results.json").read_text())
    assert results["world_size"] == 2 and results["global_step"] == 2
    assert results["num_eval_samples"] == 6
