"""``finetune --task segmentation``: the one loop on masks, mIoU picking the best epoch, exact
resume, the ade20k recipe, torchrun on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from gfnet_cli import create_model
from gfnet_cli.commands.evaluate import evaluate
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine.train import TrainConfig, finetune
from gfnet_cli.engine.train.optim import lr_at
from gfnet_cli.engine.train.outputs import TrainCallbacks
from gfnet_cli.engine.train.state import TrainingInterruptedError
from gfnet_cli.hub.resolve import load_model
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models import GFNetConfig
from tests.conftest import assert_one_line_error
from tests.test_segmentation_evaluate import mask_folder

BACKBONE = GFNetConfig(kind="pyramid", patch_size=4, embed_dim=[8, 8, 8, 8], depth=[1, 1, 1, 1],
                       img_size=32, num_classes=5)  # fmt: skip


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return mask_folder(tmp_path_factory.mktemp("seg") / "d", count=4)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("backbone") / "m"
    save_model(create_model(BACKBONE), folder)
    return folder


def _config(dataset: Path, model: Path, out: Path, **changes) -> TrainConfig:
    values = dict(model=str(model), dataset=str(dataset), output_dir=out, task="segmentation",
                  num_classes=3, img_size=32, epochs=2, batch_size=2, num_workers=0, lr=1e-3,
                  checkpoint_every=0, label_smoothing=0.0)  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)


def test_poly_schedule_decays_to_zero_as_mmsegmentation():
    total = 10
    lrs = [lr_at(step, 1e-4, 0.0, 0, total, kind="poly", power=0.9) for step in range(total + 1)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == 0.0
    assert lrs[4] == pytest.approx(1e-4 * (1 - 4 / total) ** 0.9)


def test_training_reports_miou_keeps_the_best_and_evaluate_agrees(scenes, backbone, tmp_path):
    """The saved MODEL is the epoch with the best eval mIoU, and ``evaluate`` of it gives the
    very mIoU training recorded (the same whole-image scoring); reduce_labels is recorded."""
    result = finetune(_config(scenes, backbone, tmp_path / "run", epochs=3, ema=0.9,
                              accumulate=2))  # fmt: skip
    history = [entry["metrics"]["mean_iou"] for entry in result.history]
    assert len(history) == 3 and result.best_metrics["mean_iou"] == max(history)
    assert result.best_epoch == history.index(max(history)) + 1
    model = load_model(tmp_path / "run")
    assert model.config.task == "segmentation" and model.config.class_names[0] == "class_0"
    assert model.config.segmentation.reduce_labels is False
    scored = evaluate(str(tmp_path / "run"), str(scenes), num_workers=0)
    assert scored.mean_iou == pytest.approx(result.best_metrics["mean_iou"], abs=1e-9)
    saved = json.loads((tmp_path / "run" / "train_results.json").read_text())
    assert saved["hyperparameters"]["task"] == "segmentation"


def test_without_a_validation_split_a_seeded_share_of_train_chooses(backbone, tmp_path):
    """The best epoch is never chosen on the split that is reported: a dataset with only a
    training split gives validation_split_percentage % of it (the same rows every run) to
    choose on, and trains on the rest; at 0 nothing is held out and the last epoch is kept."""
    only_train = mask_folder(tmp_path / "d", splits=("training",), count=6)
    first = finetune(_config(only_train, backbone, tmp_path / "a",
                             validation_split_percentage=34))  # fmt: skip
    second = finetune(_config(only_train, backbone, tmp_path / "b",
                              validation_split_percentage=34))  # fmt: skip
    assert first.num_train_samples == 4 and first.num_eval_samples == 2
    assert first.validation_split.endswith("[training[34% held out]]")
    assert first.best_metrics["mean_iou"] == second.best_metrics["mean_iou"]
    assert all("mean_iou" in entry["metrics"] for entry in first.history)
    none_held = finetune(_config(only_train, backbone, tmp_path / "c",
                                 validation_split_percentage=0))  # fmt: skip
    assert none_held.num_train_samples == 6 and none_held.validation_split is None
    assert none_held.best_epoch is None or none_held.best_epoch == none_held.epochs


class _InterruptAt(TrainCallbacks):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step, epoch, loss, lr, ips) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_and_resumed_run_ends_with_identical_weights(scenes, backbone, tmp_path):
    """Paired augmentation is seeded by (seed, epoch, index): the resumed steps see the same
    crops, flips and colours; the poly schedule continues where it stopped."""
    changes = dict(epochs=3, lr_schedule="poly", warmup_epochs=0.0, min_lr=0.0)
    finetune(_config(scenes, backbone, tmp_path / "ref", **changes))
    with pytest.raises(TrainingInterruptedError):
        finetune(_config(scenes, backbone, tmp_path / "cut", **changes), _InterruptAt(3))
    resumed = finetune(_config(scenes, backbone, tmp_path / "cut", resume=True, **changes))
    assert resumed.resumed_from_step == 4 and resumed.global_step == 6
    first = load_file(str(tmp_path / "ref" / "model.safetensors"))
    second = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert first.keys() == second.keys()
    for key in first:
        assert (first[key] - second[key]).abs().max().item() == 0.0, key
    assert ckpt.list_checkpoints(tmp_path / "cut" / "checkpoints")


def test_kinds_of_data_and_task_must_agree(scenes, backbone, tmp_path, run_cli, data_dir):
    common = ("--model", str(backbone), "--img-size", "32", "--num-workers", "0")
    result = run_cli("finetune", *common, "--dataset", str(scenes), "--output-dir",
                     str(tmp_path / "a"))  # fmt: skip
    assert_one_line_error(result, 2, "segmentation --dataset (columns: image (Image), "
                                     "annotation (Image)")  # fmt: skip
    result = run_cli("finetune", *common, "--task", "segmentation", "--dataset", str(scenes),
                     "--output-dir", str(tmp_path / "b"))  # fmt: skip
    assert_one_line_error(result, 2, "--labels")  # no class names: say how to give them
    result = run_cli("finetune", *common, "--task", "segmentation", "--num-classes", "3",
                     "--mixup", "0.8", "--dataset", str(scenes), "--output-dir",
                     str(tmp_path / "c"))  # fmt: skip
    assert_one_line_error(result, 2, "--mixup is a classification setting")


def test_a_classification_dataset_is_refused_naming_its_columns(backbone, tmp_path, run_cli):
    import datasets
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    data = datasets.Dataset.from_dict(
        {"image": [str(tmp_path / "x.png")] * 2, "label": [0, 1]},
        features=datasets.Features({"image": datasets.Image(),
                                    "label": datasets.ClassLabel(names=["a", "b"])}),
    )  # fmt: skip
    data.save_to_disk(str(tmp_path / "cls"))
    result = run_cli("finetune", "--model", str(backbone), "--task", "segmentation",
                     "--num-classes", "2", "--dataset", str(tmp_path / "cls"),
                     "--output-dir", str(tmp_path / "o"))  # fmt: skip
    assert_one_line_error(result, 2, "image (Image), label (ClassLabel, 2 classes)")


def test_ade20k_recipe_is_pvts_semantic_fpn_schedule(run_cli, tmp_path):
    result = run_cli("finetune", "--model", "gfnet-h-ti", "--dataset", "org/ade20k",
                     "--output-dir", str(tmp_path / "o"), "--recipe", "ade20k", "--labels",
                     "ade20k", "--print-config")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    shown = result.json()
    expected = {"task": "segmentation", "optimizer": "adamw", "base_lr": 1e-4,
                "weight_decay": 1e-4, "lr_schedule": "poly", "poly_power": 0.9, "min_lr": 0.0,
                "max_steps": 80_000, "img_size": 512, "resize_scale": [2048, 512],
                "reduce_labels": True, "warmup_epochs": 0.0, "decay_all": True}  # fmt: skip
    assert {key: shown[key] for key in expected} == expected
    assert shown["global_batch_size"] * 1e-4 / 16 == pytest.approx(shown["lr"])
    assert shown["schedule"].startswith("poly")
    # classification's augmentation is not part of the run, and images resample bilinearly
    assert not {"crop_scale", "randaugment", "mixup", "cutmix", "color_jitter"} & set(shown)
    assert shown["interpolation"] == "bilinear" and shown["hflip"] == 0.5


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return os.environ | {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True])
def test_torchrun_two_processes_on_cpu_train_and_evaluate(scenes, backbone, tmp_path, streaming):
    """Map-style (DistributedSampler) and streamed (4 shards, 2 a process) alike."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    out = tmp_path / "ddp"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "gfnet_cli",
               "finetune", "--task", "segmentation", "--model", str(backbone), "--dataset",
               str(scenes), "--num-classes", "3", "--img-size", "32", "--epochs", "2",
               "--batch-size", "2", "--num-workers", "0", "--device", "cpu",
               "--output-dir", str(out), *(["--streaming"] if streaming else [])]  # fmt: skip
    done = subprocess.run(command, env=_env() | {"OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "train_results.json").read_text())
    assert results["hyperparameters"]["streaming"] is streaming
    # 4 training scenes, 2 per process per step (BatchNorm needs 2 at a 1x1 stride-32 map),
    # 2 processes: 1 step an epoch
    assert results["world_size"] == 2 and results["global_step"] == 2
    assert results["num_eval_samples"] == 4 and "mean_iou" in results["best_metrics"]
    scored = evaluate(str(out), str(scenes), num_workers=0)
    assert scored.mean_iou == pytest.approx(results["best_metrics"]["mean_iou"], abs=1e-9)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_weights(scenes, backbone, tmp_path):
    """A segmentation run killed outright (no checkpoint on the way out) and resumed from its
    last periodic checkpoint ends with the uninterrupted run's weights, bit for bit."""
    from tests.test_finetune import _assert_same_weights, _run_killed_and_resumed

    common = ["--task", "segmentation", "--model", str(backbone), "--dataset", str(scenes),
              "--num-classes", "3", "--img-size", "32", "--epochs", "3", "--batch-size", "2",
              "--checkpoint-every", "1", "--num-workers", "1", "--lr-schedule", "poly"]  # fmt: skip
    ref, cut = _run_killed_and_resumed(common, tmp_path)
    results = json.loads((cut / "train_results.json").read_text())
    assert results["resumed_from_step"] >= 1 and results["global_step"] == 6
    _assert_same_weights(ref, cut)
