"""finetune at scale: MODEL's head kept for MODEL's classes, one run per output folder, EMA,
gradient accumulation, eval-mode training, gradient checkpointing, compile, and exact resume
with all of them on."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gfnet_cli import create_model
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine.distributed import DistInfo
from gfnet_cli.engine.train import (
    OutputDirLockedError,
    TrainCallbacks,
    TrainingInterruptedError,
    build_model,
    finetune,
)
from gfnet_cli.engine.train.lock import LOCK_NAME, RunLock, locked_output_dir
from gfnet_cli.engine.train.model import same_classes
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.labels import imagenet_class_names, imagenet_synsets
from gfnet_cli.models.config import GFNetConfig
from tests.conftest import assert_one_line_error
from tests.test_finetune import (
    CLASSES,
    TINY_ARGS,
    _assert_same_weights,
    _config,
    _env,
    _gfnet,
    _InterruptAt,
    _write_images,
)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Three classes, 8 train and 2 test images each."""
    root = tmp_path_factory.mktemp("scale_data")
    for index, name in enumerate(CLASSES):
        _write_images(root / "train" / name, 8, index, seed=0)
        _write_images(root / "test" / name, 2, index, seed=1)
    return root


def _pretrained(tmp_path: Path, class_names: list[str], drop_path: float = 0.0) -> Path:
    config = GFNetConfig(patch_size=8, embed_dim=16, depth=2, img_size=32,
                         num_classes=len(class_names), class_names=class_names,
                         drop_path_rate=drop_path)  # fmt: skip
    folder = tmp_path / f"pretrained-{len(class_names)}-{drop_path}"
    save_model(create_model(config), folder)
    return folder


def _pretrained_config(dataset: Path, out: Path, folder: Path, **changes):
    return _config(dataset, out, model=str(folder), from_scratch=False, patch_size=None,
                   embed_dim=None, depth=None, img_size=None, **changes)  # fmt: skip


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


# ---------------------------------------------------------------------- the head
def test_models_head_is_kept_for_the_same_classes_in_the_same_order(image_folder, tmp_path):
    folder = _pretrained(tmp_path, CLASSES)
    source = _weights(folder)
    started = build_model(_pretrained_config(image_folder, tmp_path, folder), CLASSES)
    assert started.head == "kept"
    assert torch.equal(started.model.head.weight, source["head.weight"])
    fresh = build_model(_pretrained_config(image_folder, tmp_path, folder, new_head=True),
                        CLASSES)  # fmt: skip
    assert fresh.head == "new" and "new_head" in fresh.reason
    assert not torch.equal(fresh.model.head.weight, source["head.weight"])
    reordered = build_model(_pretrained_config(image_folder, tmp_path, folder),
                            ["dog", "cat", "fox"])  # fmt: skip
    assert reordered.head == "new" and "not MODEL's" in reordered.reason


def test_imagenet_synset_folders_keep_an_imagenet_head():
    imagenet = GFNetConfig(patch_size=16, embed_dim=8, depth=1, num_classes=1000,
                           class_names=imagenet_class_names())  # fmt: skip
    assert same_classes(imagenet_synsets(), imagenet)
    assert same_classes([n.upper() for n in imagenet_class_names()], imagenet)
    assert not same_classes(imagenet_synsets()[::-1], imagenet)
    assert not same_classes(imagenet_synsets()[:10], imagenet)
    nameless = GFNetConfig(patch_size=16, embed_dim=8, depth=1, num_classes=3)
    assert not same_classes(["class_0", "class_1", "class_2"], nameless)


def test_the_log_results_and_card_say_what_became_of_the_head(run_cli, image_folder, tmp_path):
    folder = _pretrained(tmp_path, CLASSES)
    for flags, head in (([], "kept"), (["--new-head"], "new")):
        out = tmp_path / f"run-{head}"
        result = run_cli("finetune", "--model", folder, "--dataset", image_folder, "--output-dir",
                         out, "--epochs", "1", "--batch-size", "8", "--num-workers", "0", *flags)
        assert result.exit_code == 0, result.stderr
        assert f"classifier {head}" in result.stderr
        assert json.loads((out / "train_results.json").read_text())["head"] == head
        card = (out / "README.md").read_text()
        assert ("MODEL's classifier" if head == "kept" else "new classifier") in card


# ---------------------------------------------------------------------- one run per folder
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from gfnet_cli.engine.train import TrainCallbacks, TrainConfig, finetune

    class Hold(TrainCallbacks):
        def on_train_begin(self, *args):
            Path(sys.argv[3]).write_text("ready")
            deadline = time.monotonic() + 120
            while not Path(sys.argv[4]).exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    config = TrainConfig(model="gfnet-ti", dataset=sys.argv[1], output_dir=Path(sys.argv[2]),
                         from_scratch=True, patch_size=8, embed_dim=16, depth=1, img_size=32,
                         epochs=1, batch_size=8, num_workers=0)
    finetune(config, Hold())
    """
)


@pytest.mark.slow
def test_a_second_run_into_a_used_output_dir_is_refused(image_folder, tmp_path):
    out, ready, release = tmp_path / "out", tmp_path / "ready", tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", _HOLDER, str(image_folder), str(out),
                              str(ready), str(release)], env=_env(),
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), first.stderr.read() if first.poll() is not None else "timeout"
        command = _gfnet("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out,
                         "--resume")  # fmt: skip
        second = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid} on {socket.gethostname()}" in second.stderr
        assert "--output-dir" in second.stderr and "Traceback" not in second.stderr
    finally:
        release.write_text("go")
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert not (out / LOCK_NAME).exists()  # released at the end
    assert (out / "train_results.json").is_file()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_stale_lock_is_taken_over_with_a_warning(run_cli, image_folder, tmp_path):
    out = tmp_path / "stale"
    out.mkdir()
    record = {"pid": _dead_pid(), "host": socket.gethostname(), "started": 0}
    (out / LOCK_NAME).write_text(json.dumps(record))
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out,
                     "--epochs", "1", "--batch-size", "8")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "taking over the lock" in result.stderr and str(record["pid"]) in result.stderr
    assert not (out / LOCK_NAME).exists()


def test_another_hosts_lock_is_never_taken(run_cli, image_folder, tmp_path):
    out = tmp_path / "remote"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out)
    assert_one_line_error(result, 2, "pid 1 on elsewhere")
    assert "delete" in result.stderr and (out / LOCK_NAME).exists()


def test_the_lock_is_exclusive_within_one_host(tmp_path):
    first = RunLock(tmp_path / "o").acquire()
    with pytest.raises(OutputDirLockedError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path / "o").acquire()
    first.release()
    with RunLock(tmp_path / "o"):
        assert (tmp_path / "o" / LOCK_NAME).is_file()
    assert not (tmp_path / "o").exists()  # created for the run, empty: removed again


def test_only_rank_0_takes_the_lock(tmp_path):
    other_rank = DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    with locked_output_dir(tmp_path / "o", other_rank):
        assert not (tmp_path / "o" / LOCK_NAME).exists()
    main = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    with locked_output_dir(tmp_path / "o", main):
        assert (tmp_path / "o" / LOCK_NAME).is_file()


# ---------------------------------------------------------------------- EMA, accumulation
def test_accumulating_two_micro_batches_equals_one_batch_of_twice_the_size(
    image_folder, tmp_path
):
    # all 24 images train (none held out): 3 full steps of 8 either way
    common = dict(epochs=1, augment=False, label_smoothing=0.0, seed=3,
                  validation_split_percentage=0)  # fmt: skip
    finetune(_config(image_folder, tmp_path / "big", batch_size=8, **common))
    result = finetune(_config(image_folder, tmp_path / "acc", batch_size=4, accumulate=2,
                              **common))  # fmt: skip
    assert result.global_step == 3  # 24 images, 8 per optimizer step
    big, accumulated = _weights(tmp_path / "big"), _weights(tmp_path / "acc")
    for key in big:
        assert torch.allclose(big[key], accumulated[key], atol=1e-6), key


def test_a_short_last_step_averages_its_micro_batches(image_folder, tmp_path):
    # 24 images in micro-batches of 5: 5 batches (the last of 4), 3 to a step: 2 steps
    result = finetune(_config(image_folder, tmp_path / "short", batch_size=5, accumulate=3,
                              epochs=1))  # fmt: skip
    assert result.global_step == 2 and result.history[0]["global_step"] == 2


def test_ema_is_evaluated_and_the_better_weights_are_kept(image_folder, tmp_path):
    out = tmp_path / "ema"
    result = finetune(_config(image_folder, out, ema=0.5, epochs=2, batch_size=4))
    for epoch in result.history:
        assert epoch["raw_top1"] is not None and epoch["ema_top1"] is not None
        assert epoch["top1"] == max(epoch["raw_top1"], epoch["ema_top1"])
        assert epoch["weights"] == ("ema" if epoch["ema_top1"] > epoch["raw_top1"] else "raw")
    assert result.best_weights in ("raw", "ema")
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(out / "checkpoints")[-1])
    assert set(state["ema"]) == set(state["model"])
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("ema_top1" in row for row in rows if row["type"] == "eval")


def test_a_nearly_frozen_average_loses_to_the_raw_weights(image_folder, tmp_path):
    # decay 0.9999 over 12 steps: the EMA is still about the initial weights
    result = finetune(_config(image_folder, tmp_path / "slow", ema=0.9999, epochs=2,
                              batch_size=4, lr=3e-3))  # fmt: skip
    best = result.history[result.best_epoch - 1]
    assert best["weights"] == "raw" and best["raw_top1"] > best["ema_top1"]


class _Keep(TrainCallbacks):
    def __init__(self) -> None:
        self.steps = 0

    def on_step(self, step, epoch, loss, lr, ips) -> None:
        self.steps = step


def test_everything_on_resumes_to_the_same_weights(image_folder, tmp_path):
    changes = dict(epochs=3, batch_size=3, accumulate=2, ema=0.8, drop_path=0.2,
                   randaugment="rand-m9-mstd0.5-inc1", reprob=0.5, mixup=0.8, cutmix=1.0,
                   crop_scale=(0.08, 1.0), grad_checkpointing=True)  # fmt: skip
    reference = finetune(_config(image_folder, tmp_path / "ref", **changes))
    assert reference.global_step == 12  # 8 micro-batches of 3 an epoch, 2 to a step
    with pytest.raises(TrainingInterruptedError):
        finetune(_config(image_folder, tmp_path / "cut", **changes), _InterruptAt(5))
    resumed = finetune(_config(image_folder, tmp_path / "cut", resume=True, **changes))
    assert resumed.resumed_from_step == 6 and resumed.global_step == 12
    assert [e["top1"] for e in resumed.history] == [e["top1"] for e in reference.history]
    _assert_same_weights(tmp_path / "ref", tmp_path / "cut")
    last_ref = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "ref" / "checkpoints")[-1])
    last_cut = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "cut" / "checkpoints")[-1])
    for key in last_ref["ema"]:
        assert (last_ref["ema"][key] - last_cut["ema"][key]).abs().max() <= 1e-6, key


# ---------------------------------------------------------------------- eval mode, memory
def test_eval_mode_training_switches_drop_path_off(image_folder, tmp_path):
    """The authors' fine-tuning holds the model in eval mode: a MODEL with drop path then
    trains exactly as one without it."""
    with_drop = _pretrained(tmp_path, ["a", "b", "c", "d"], drop_path=0.5)
    without = tmp_path / "without"
    model = create_model(GFNetConfig.load(with_drop).replace(drop_path_rate=0.0))
    model.load_state_dict(_weights(with_drop))
    save_model(model, without)
    common = dict(epochs=1, batch_size=8, eval_mode=True)
    finetune(_pretrained_config(image_folder, tmp_path / "a", with_drop, **common))
    finetune(_pretrained_config(image_folder, tmp_path / "b", without, **common))
    first, second = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(first[k], second[k]) for k in first)
    finetune(_pretrained_config(image_folder, tmp_path / "c", with_drop, epochs=1, batch_size=8))
    trained = _weights(tmp_path / "c")
    assert any(not torch.equal(first[k], trained[k]) for k in first)  # drop path did act


def test_gradient_checkpointing_trains_to_the_same_weights(image_folder, tmp_path):
    common = dict(epochs=1, batch_size=8, drop_path=0.3, depth=2)
    finetune(_config(image_folder, tmp_path / "plain", **common))
    finetune(_config(image_folder, tmp_path / "ckpt", grad_checkpointing=True, **common))
    plain, recomputed = _weights(tmp_path / "plain"), _weights(tmp_path / "ckpt")
    for key in plain:
        assert torch.allclose(plain[key], recomputed[key], atol=1e-6), key


def test_compile_reports_its_time_apart(image_folder, tmp_path, monkeypatch):
    # Dynamo's eager backend: the same graph capture as inductor, none of its compile time
    # (inductor on CUDA is covered by tests/gpu).
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    result = finetune(_config(image_folder, tmp_path / "compiled", compile=True, epochs=1,
                              batch_size=8))  # fmt: skip
    assert result.compile_time_s is not None and result.compile_time_s > 0
    assert result.global_step == 3 and result.best_top1 is not None
    plain = finetune(_config(image_folder, tmp_path / "plain", epochs=1, batch_size=8))
    assert plain.compile_time_s is None
    compiled, eager = _weights(tmp_path / "compiled"), _weights(tmp_path / "plain")
    for key in eager:
        assert torch.allclose(compiled[key], eager[key], atol=1e-5), key
