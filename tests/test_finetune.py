"""gfnet finetune: starting points, recipe pieces, checkpoints, exact resume, failure modes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gfnet_cli import create_model
from gfnet_cli.data.augment import TrainTransform, random_resized_crop_box, sample_rng
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine.train import (
    TrainCallbacks,
    TrainConfig,
    TrainingInterruptedError,
    build_model,
    finetune,
    lr_at,
    param_groups,
)
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.layers import GlobalFilter, clear_filter_form_choices
from tests.conftest import assert_one_line_error
from tests.hub_server import FakeHub

TINY = ["--from-scratch", "--patch-size", "8", "--embed-dim", "16", "--depth", "1"]
TINY_ARGS = ["--model", "gfnet-ti", *TINY, "--img-size", "32", "--num-workers", "0"]
CLASSES = ["cat", "dog", "fox"]


def _write_images(folder: Path, count: int, class_index: int, seed: int) -> None:
    rng = np.random.default_rng([seed, class_index])
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        array = rng.integers(0, 60, size=(24, 28, 3), dtype=np.uint8)
        array[..., class_index] += 150  # learnable: each class has its own dominant colour
        Image.fromarray(array).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Three classes, 8 train and 2 test images each."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    for index, name in enumerate(CLASSES):
        _write_images(root / "train" / name, 8, index, seed=0)
        _write_images(root / "test" / name, 2, index, seed=1)
    return root


def _config(dataset: Path, out: Path, **changes) -> TrainConfig:
    values = dict(
        model="gfnet-ti", dataset=str(dataset), output_dir=out, from_scratch=True,
        patch_size=8, embed_dim=16, depth=1, img_size=32, epochs=2, batch_size=4,
        num_workers=0, lr=1e-3, checkpoint_every=0,
    )  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)


# ---------------------------------------------------------------------- recipe pieces
def test_lr_schedule_warms_up_then_decays_to_min_lr():
    lrs = [lr_at(s, 1.0, 0.01, 4, 20) for s in range(21)]
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    assert lrs[20] == pytest.approx(0.01)


def test_weight_decay_skips_norms_biases_pos_embed_and_filters():
    model = create_model("gfnet-ti", patch_size=8, embed_dim=16, depth=1, img_size=32)
    decay, no_decay = param_groups(model, 0.1, decay_all=False)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"pos_embed", "blocks.0.filter.complex_weight", "norm.weight", "head.bias"} <= skipped
    assert {names[id(p)] for p in decay["params"]} >= {"head.weight", "blocks.0.mlp.fc1.weight"}
    assert len(param_groups(model, 0.1, decay_all=True)) == 1


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8))
    transform = TrainTransform(32, seed=7)

    def sample(epoch: int, index: int) -> torch.Tensor:
        transform.reseed(epoch, index)
        return transform(image)

    first = sample(1, 3)
    sample(0, 0)  # anything in between must not matter
    assert torch.equal(first, sample(1, 3))
    assert first.shape == (3, 32, 32)
    assert not torch.equal(first, sample(2, 3))
    for i in range(50):
        left, top, right, bottom = random_resized_crop_box(50, 40, sample_rng(0, 0, i))
        assert 0 <= left < right <= 50 and 0 <= top < bottom <= 40


# ---------------------------------------------------------------------- starting points
def test_from_scratch_overrides_and_pyramid_widths():
    names = ["a", "b"]
    flat = build_model(_config(Path("."), Path(".")), names).model
    assert (flat.config.patch_size, flat.config.embed_dim, flat.config.depth) == (8, 16, 1)
    assert flat.config.labels == names and flat.config.architecture is None
    pyramid = build_model(
        _config(
            Path("."),
            Path("."),
            model="gfnet-h-ti",
            patch_size=4,
            embed_dim=[8, 16, 16, 32],
            depth=[1, 1, 1, 1],
        ),  # fmt: skip
        names,
    ).model
    assert pyramid.config.kind == "pyramid" and pyramid.config.widths == [8, 16, 16, 32]
    assert pyramid(torch.randn(1, 3, 32, 32)).shape == (1, 2)


def _pretrained(tmp_path: Path) -> Path:
    config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=7)
    folder = tmp_path / "pretrained"
    save_model(create_model(config), folder)
    return folder


def test_pretrained_gets_new_head_with_class_names(tmp_path):
    folder = _pretrained(tmp_path)
    model = build_model(_config(Path("."), Path("."), model=str(folder), from_scratch=False,
                                patch_size=None, embed_dim=None, depth=None, img_size=None),
                        CLASSES).model  # fmt: skip
    source = load_file(str(folder / "model.safetensors"))
    assert model.head.weight.shape == (3, 16) and model.config.class_names == CLASSES
    key = "blocks.0.mlp.fc1.weight"
    assert torch.equal(model.state_dict()[key], source[key])


def test_pretrained_at_another_resolution_resizes_filters_and_pos_embed(tmp_path):
    folder = _pretrained(tmp_path)
    model = build_model(_config(Path("."), Path("."), model=str(folder), from_scratch=False,
                                patch_size=None, embed_dim=None, depth=None, img_size=64),
                        CLASSES).model  # fmt: skip
    assert model.config.image_size == (64, 64)
    assert model.pos_embed.shape == (1, 64, 16)
    assert model.blocks[0].filter.complex_weight.shape[:2] == (8, 5)


def test_from_scratch_fetches_only_the_config_of_a_hub_model(tmp_path, monkeypatch):
    server = FakeHub().start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        folder = _pretrained(tmp_path)
        server.add_repo("org/base", {p.name: p.read_bytes() for p in folder.iterdir()})
        model = build_model(_config(Path("."), Path("."), model="org/base", depth=2),
                            ["a", "b"]).model  # fmt: skip
        assert {path for _, path in server.requests} == {"/org/base/resolve/main/config.json"}
    finally:
        server.stop()
    assert (model.config.depth, model.config.num_classes) == (2, 2)


def test_pyramid_widths_and_depths_from_the_command_line(run_cli, image_folder, tmp_path):
    out = tmp_path / "pyramid"
    args = ["--model", "gfnet-h-ti", "--from-scratch", "--patch-size", "4", "--embed-dim",
            "8,16,16,32", "--depth", "1,1,1,1", "--img-size", "32", "--num-workers", "0"]
    result = run_cli("finetune", *args, "--dataset", image_folder, "--output-dir", out,
                     "--epochs", "1", "--batch-size", "8")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    saved = json.loads((out / "config.json").read_text())
    assert (saved["embed_dim"], saved["depth"]) == ([8, 16, 16, 32], [1, 1, 1, 1])
    bad = run_cli("finetune", *args[:6], "8,x", *args[7:], "--dataset", image_folder,
                  "--output-dir", tmp_path / "bad")  # fmt: skip
    assert_one_line_error(bad, 2, "--embed-dim")


def test_architecture_flags_need_from_scratch(run_cli, image_folder, tmp_path):
    folder = _pretrained(tmp_path)
    result = run_cli("finetune", "--model", folder, "--dataset", image_folder, "--output-dir",
                     tmp_path / "out", "--depth", "2")  # fmt: skip
    assert_one_line_error(result, 2, "--from-scratch")


# ---------------------------------------------------------------------- a whole run
def test_finetune_leaves_model_folder_results_and_metrics(run_cli, image_folder, tmp_path):
    out = tmp_path / "run"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out,
                     "--epochs", "2", "--batch-size", "8", "--lr", "3e-3", "--log-every", "1",
                     "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = result.json()
    saved = json.loads((out / "train_results.json").read_text())
    for key in ("epochs", "global_step", "world_size", "best_top1", "train_runtime_s",
                "resumed_from_step"):  # fmt: skip
        assert key in saved
    assert saved["epochs"] == 2 and saved["global_step"] == 6 and saved["world_size"] == 1
    assert saved["resumed_from_step"] == 0 and document["global_step"] == 6
    config = json.loads((out / "config.json").read_text())
    assert config["class_names"] == CLASSES and config["num_classes"] == 3
    card = (out / "README.md").read_text()
    assert image_folder.name in card and str(image_folder) not in card  # no local path
    assert "top-1" in card.lower()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["type"] == "train"] == list(range(1, 7))
    assert len([r for r in rows if r["type"] == "eval"]) == 2
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == [
        "step-000000003.pt",
        "step-000000006.pt",
    ]
    state = ckpt.load_checkpoint(out / "checkpoints" / "step-000000006.pt")
    assert state["epoch"] == 2 and set(state["rng"][0]) >= {"torch", "numpy", "python"}
    # the reader is weights-only: the file holds tensors and plain types only
    torch.load(out / "checkpoints" / "step-000000006.pt", weights_only=True)


def test_the_epoch_is_chosen_on_validation_and_test_is_reported_apart(run_cli, image_folder,
                                                                     tmp_path):  # fmt: skip
    out = tmp_path / "selected"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out,
                     "--epochs", "2", "--batch-size", "8", "--validation-split-percentage", "25")
    assert result.exit_code == 0, result.stderr
    saved = json.loads((out / "train_results.json").read_text())
    # no validation split in the folder: 25 % of each class of train held out (2 of 8)
    assert saved["validation_split"] == f"{image_folder} [train[25% held out]]"
    assert saved["num_train_samples"] == 18 and saved["num_eval_samples"] == 6
    assert saved["test"]["split"] == f"{image_folder} [test]" and saved["test"]["count"] == 6
    assert saved["hyperparameters"]["validation_split_percentage"] == 25
    said = " ".join(result.stdout.split())
    assert f"chosen on {image_folder} [train[25% held out]]" in said
    assert "test top-1" in said and f"({image_folder} [test], measured once" in said
    assert "(chose the epoch)" in (out / "README.md").read_text()
    assert f"| test | {saved['test']['top1'] * 100:.2f} |" in (out / "README.md").read_text()


def test_held_out_validation_is_seeded_stratified_and_disjoint():
    import datasets

    from gfnet_cli.data.datasets import ImageDataset
    from gfnet_cli.engine.train.data import carve_validation

    labels = [0] * 40 + [1] * 20 + [2] * 3
    table = datasets.Dataset.from_dict({"image": [None] * len(labels), "label": labels,
                                        "row": list(range(len(labels)))})  # fmt: skip
    data = ImageDataset(table, "d", "train", "image", "label", ["a", "b", "c"])
    train, validation = carve_validation(data, 10, seed=0)
    held = list(validation.dataset["row"])
    assert sorted(held + list(train.dataset["row"])) == list(range(len(labels)))  # disjoint, whole
    assert [list(validation.dataset["label"]).count(c) for c in range(3)] == [4, 2, 0]
    assert list(carve_validation(data, 10, seed=0)[1].dataset["row"]) == held  # seeded
    assert list(carve_validation(data, 10, seed=1)[1].dataset["row"]) != held
    assert validation.split == "train[10% held out]"
    assert carve_validation(data, 1, seed=0) == (data, None)  # too small: no validation


def test_resume_of_a_finished_run_changes_nothing_and_exits_0(run_cli, image_folder, tmp_path):
    out = tmp_path / "done"
    args = [*TINY_ARGS, "--dataset", image_folder, "--output-dir", out, "--epochs", "1",
            "--batch-size", "8"]  # fmt: skip
    assert run_cli("finetune", *args).exit_code == 0

    def snapshot() -> dict[str, tuple[bytes, int]]:
        return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
                for p in sorted(out.rglob("*")) if p.is_file()}  # fmt: skip

    before = snapshot()
    again = run_cli("finetune", *args, "--resume")
    assert again.exit_code == 0, again.stderr
    err = " ".join(again.stderr.split())
    assert "already complete (1 epochs" in err and "from scratch" not in err, err
    assert "Trained" not in again.stdout and again.stdout.strip() == str(out)
    assert snapshot() == before
    longer = run_cli("finetune", *args[:-4], "--epochs", "2", "--batch-size", "8", "--resume")
    assert longer.exit_code == 0 and "Trained 2 epochs" in longer.stdout, longer.stderr


def test_used_output_dir_needs_resume_or_overwrite(run_cli, image_folder, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "something").write_text("x")
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out)
    assert_one_line_error(result, 2, "--resume")


# ---------------------------------------------------------------------- exact resume
class _InterruptAt(TrainCallbacks):
    """Sends this process a Ctrl-C after ``step`` steps (as a user would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step, epoch, loss, lr, ips) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_and_resumed_run_matches_uninterrupted(image_folder, tmp_path):
    changes = dict(epochs=3, drop_path=0.3, depth=2, batch_size=5)  # drop-path draws RNG
    reference = finetune(_config(image_folder, tmp_path / "ref", **changes))
    with pytest.raises(TrainingInterruptedError):
        finetune(_config(image_folder, tmp_path / "cut", **changes), _InterruptAt(7))
    saved = ckpt.list_checkpoints(tmp_path / "cut" / "checkpoints")
    # Ctrl-C during step 7 stops at the next step boundary: mid-epoch 2 (5 steps an epoch)
    assert saved[-1].name == "step-000000008.pt"
    resumed = finetune(_config(image_folder, tmp_path / "cut", resume=True, **changes))
    assert resumed.resumed_from_step == 8 and resumed.global_step == reference.global_step
    assert resumed.best_top1 == reference.best_top1
    _assert_same_weights(tmp_path / "ref", tmp_path / "cut")


def test_mixup_cutmix_run_resumes_to_the_same_weights(image_folder, tmp_path):
    # lambdas and boxes come from (seed, rank, step): the resumed steps mix exactly alike
    changes = dict(epochs=3, batch_size=5, mixup=0.8, cutmix=1.0, drop_path=0.2)
    reference = finetune(_config(image_folder, tmp_path / "ref", **changes))
    with pytest.raises(TrainingInterruptedError):
        finetune(_config(image_folder, tmp_path / "cut", **changes), _InterruptAt(7))
    resumed = finetune(_config(image_folder, tmp_path / "cut", resume=True, **changes))
    assert resumed.resumed_from_step == 8 and resumed.global_step == reference.global_step
    _assert_same_weights(tmp_path / "ref", tmp_path / "cut")
    saved = json.loads((tmp_path / "cut" / "train_results.json").read_text())
    assert {k: saved["hyperparameters"][k] for k in ("mixup", "cutmix", "mix_prob",
            "mix_switch_prob")} == {"mixup": 0.8, "cutmix": 1.0, "mix_prob": 1.0,
                                    "mix_switch_prob": 0.5}  # fmt: skip
    # and mixing really happened: without it the same run ends elsewhere
    plain = changes | {"mixup": 0.0, "cutmix": 0.0}
    finetune(_config(image_folder, tmp_path / "plain", **plain))
    first = load_file(str(tmp_path / "ref" / "model.safetensors"))
    other = load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert any((first[k] - other[k]).abs().max().item() > 1e-4 for k in first)


def _assert_same_weights(a: Path, b: Path) -> None:
    first = load_file(str(a / "model.safetensors"))
    second = load_file(str(b / "model.safetensors"))
    assert first.keys() == second.keys()
    for key in first:
        assert (first[key] - second[key]).abs().max().item() <= 1e-6, key
    last_a = ckpt.load_checkpoint(ckpt.list_checkpoints(a / "checkpoints")[-1])["model"]
    last_b = ckpt.load_checkpoint(ckpt.list_checkpoints(b / "checkpoints")[-1])["model"]
    for key in last_a:
        assert (last_a[key] - last_b[key]).abs().max().item() <= 1e-6, key


def test_resume_without_checkpoint_starts_afresh_with_warning(image_folder, tmp_path, caplog):
    result = finetune(_config(image_folder, tmp_path / "fresh", resume=True, epochs=1))
    assert result.resumed_from_step == 0 and result.global_step == 6
    assert "starting afresh" in caplog.text


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    directory = tmp_path / "checkpoints"
    ckpt.save_checkpoint({"model": {}, "global_step": 1}, directory, 1)

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        ckpt.save_checkpoint({"model": {}, "global_step": 2}, directory, 2)
    assert [p.name for p in directory.iterdir()] == ["step-000000001.pt"]
    assert ckpt.latest_checkpoint(directory)[1]["global_step"] == 1


def test_nan_loss_stops_with_clear_message_and_good_checkpoint(run_cli, image_folder, tmp_path):
    out = tmp_path / "nan"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out,
                     "--epochs", "3", "--batch-size", "8", "--lr", "1e30", "--warmup-epochs",
                     "0", "--clip-grad", "0", "--checkpoint-every", "1")  # fmt: skip
    assert_one_line_error(result, 1)
    assert "nan" in result.stderr.lower() or "inf" in result.stderr.lower()
    for path in ckpt.list_checkpoints(out / "checkpoints"):
        state = ckpt.load_checkpoint(path)
        assert all(torch.isfinite(v).all() for v in state["model"].values())


# ---------------------------------------------------------------------- pre-flight checks
def _saved_dataset(tmp_path: Path, name: str, *, label: bool = True, classes: int = 2,
                   test_rows: int = 2) -> Path:  # fmt: skip
    import datasets

    image = Image.new("RGB", (32, 32), (200, 10, 10))
    features = {"image": datasets.Image()}
    if label:
        features["label"] = datasets.ClassLabel(names=[f"c{i}" for i in range(classes)])

    def split(rows: int) -> datasets.Dataset:
        data = {"image": [image] * rows}
        if label:
            data["label"] = [i % classes for i in range(rows)]
        return datasets.Dataset.from_dict(data, features=datasets.Features(features))

    folder = tmp_path / name
    datasets.DatasetDict({"train": split(4), "test": split(test_rows)}).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("no_label", "no label column"),
        ("one_class", "at least 2"),
        ("empty_split", "empty"),
        ("bad_size", "multiples of 8"),
    ],
)
def test_preflight_errors_exit_2_with_one_line(run_cli, tmp_path, kind, message):
    args = list(TINY_ARGS)
    if kind == "no_label":
        dataset = _saved_dataset(tmp_path, kind, label=False)
    elif kind == "one_class":
        dataset = _saved_dataset(tmp_path, kind, classes=1)
    elif kind == "empty_split":
        dataset = _saved_dataset(tmp_path, kind, test_rows=0)
    else:
        dataset = _saved_dataset(tmp_path, kind)
        args[args.index("--img-size") + 1] = "36"
    out = tmp_path / "out"
    result = run_cli("finetune", *args, "--dataset", dataset, "--output-dir", out)
    assert_one_line_error(result, 2, message)
    assert not (out / "checkpoints").exists()


def test_reading_a_local_folder_draws_no_datasets_progress_bars(tmp_path, capfd):
    from datasets.utils.tqdm import are_progress_bars_disabled

    from gfnet_cli.data.datasets import load_splits

    for index, name in enumerate(CLASSES):
        _write_images(tmp_path / "data" / "train" / name, 2, index, seed=0)
    splits = load_splits(str(tmp_path / "data"))  # a first read: datasets builds its cache
    assert len(splits["train"]) == 6
    err = capfd.readouterr().err
    assert "Generating" not in err and "examples" not in err, err
    assert not are_progress_bars_disabled()  # a Hub download still shows its bars


@pytest.mark.parametrize("layout", ["train/cat", "cat"])
def test_an_image_folder_of_one_class_says_so_in_one_line(run_cli, tmp_path, layout):
    # datasets drops the label column of a one-folder image folder; "no label column" misled.
    root = tmp_path / "one"
    _write_images(root / layout, 3, 0, seed=0)
    if layout.startswith("train"):
        _write_images(root / "test" / "cat", 2, 0, seed=1)
    result = run_cli("finetune", *TINY_ARGS, "--dataset", root, "--output-dir", tmp_path / "o")
    assert_one_line_error(result, 2, "has one class ('cat'): a classifier needs at least 2")
    # nothing else on stderr: no datasets progress bar, no warning before the error
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mixup", "-0.5"], "--mixup"),
        (["--cutmix", "-1"], "--cutmix"),
        (["--mix-prob", "1.5"], "--mix-prob"),
        (["--mixup", "1", "--mix-switch-prob", "-0.1"], "--mix-switch-prob"),
    ],
)
def test_mix_settings_out_of_range_exit_2(run_cli, image_folder, tmp_path, flags, message):
    out = tmp_path / "out"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out,
                     *flags)  # fmt: skip
    assert_one_line_error(result, 2, message)
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"log_every": 0}, "log_every"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
        ({"mixup": -1.0}, "mixup"),
        ({"from_scratch": False}, "from_scratch"),  # patch_size/embed_dim/depth need it
        ({"embed_dim": "8,16,16,32"}, "embed_dim"),  # the CLI parses lists, the library does not
    ],
)
def test_recipe_errors_name_the_parameter(image_folder, tmp_path, change, param):
    out = tmp_path / "out"
    with pytest.raises(UsageError) as error:
        finetune(_config(image_folder, out, **change))
    assert error.value.param == param and "\n" not in str(error.value)
    assert not out.exists()  # refused before anything is read or written


def test_library_messages_name_parameters_not_flags(image_folder, tmp_path):
    with pytest.raises(UsageError, match="^lr must be positive, got 0"):
        finetune(_config(image_folder, tmp_path / "out", lr=0))


def test_fp16_on_the_cpu_is_refused_before_training(run_cli, image_folder, tmp_path):
    # as predict, evaluate and profile refuse it: CPU fp16 autocast is slow and poorly supported
    out = tmp_path / "out"
    result = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out,
                     "--device", "cpu", "--precision", "fp16")  # fmt: skip
    assert_one_line_error(result, 2, "fp16")
    assert "bf16" in result.stderr and not out.exists()
    with pytest.raises(UsageError) as error:
        finetune(_config(image_folder, out, device="cpu", precision="fp16"))
    assert error.value.param == "precision" and not out.exists()


def test_resume_refuses_another_model_or_dataset(run_cli, image_folder, tmp_path):
    out = tmp_path / "run"
    first = run_cli("finetune", *TINY_ARGS, "--dataset", image_folder, "--output-dir", out,
                    "--epochs", "1", "--batch-size", "8")  # fmt: skip
    assert first.exit_code == 0, first.stderr
    other_model = [a if a != "16" else "24" for a in TINY_ARGS]
    result = run_cli("finetune", *other_model, "--dataset", image_folder, "--output-dir", out,
                     "--resume")  # fmt: skip
    assert_one_line_error(result, 2, "another run")
    other_data = _saved_dataset(tmp_path, "other")
    result = run_cli("finetune", *TINY_ARGS, "--dataset", other_data, "--output-dir", out,
                     "--resume")  # fmt: skip
    assert_one_line_error(result, 2, "another run")


# ---------------------------------------------------------------------- processes
def _gfnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "gfnet_cli", *[str(a) for a in args]]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return os.environ | {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _wait_for_checkpoint(process: subprocess.Popen, folder: Path, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if ckpt.list_checkpoints(folder / "checkpoints"):
            return True
        time.sleep(0.005)
    return False


KILL_RUN = ["--epochs", "3", "--batch-size", "2", "--checkpoint-every", "3", "--drop-path",
            "0.2", "--num-workers", "1"]  # fmt: skip


def _run_killed_and_resumed(common: list, tmp_path: Path) -> tuple[Path, Path]:
    """Train ``common`` once uninterrupted (``ref``) and once SIGKILLed then resumed (``cut``).

    The two runs are two processes, each of which would time the filter forms for itself: one
    fixed form makes them comparable (the resume itself takes the forms its checkpoint
    recorded: test_a_resume_trains_in_the_forms_its_checkpoint_recorded)."""
    common = [*common, "--filter-form", "fft"]
    done = subprocess.run(_gfnet("finetune", *common, "--output-dir", tmp_path / "ref"),
                          env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    process = subprocess.Popen(_gfnet("finetune", *common, "--output-dir", cut), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    assert _wait_for_checkpoint(process, cut), "the run ended before its first checkpoint"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (cut / "train_results.json").exists()
    resumed = subprocess.run(_gfnet("finetune", *common, "--output-dir", cut, "--resume"),
                             env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    return tmp_path / "ref", cut


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_weights(image_folder, tmp_path):
    common = [*TINY_ARGS[:-2], "--dataset", image_folder, *KILL_RUN]
    ref, cut = _run_killed_and_resumed(common, tmp_path)
    results = json.loads((cut / "train_results.json").read_text())
    assert results["resumed_from_step"] >= 3
    _assert_same_weights(ref, cut)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_then_exits(image_folder, tmp_path):
    out = tmp_path / "int"
    args = [*TINY_ARGS[:-2], "--dataset", image_folder, "--output-dir", out, "--epochs", "50",
            "--batch-size", "2", "--checkpoint-every", "2", "--num-workers", "1"]  # fmt: skip
    process = subprocess.Popen(_gfnet("finetune", *args), env=_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert _wait_for_checkpoint(process, out)
    first = ckpt.list_checkpoints(out / "checkpoints")[-1]
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "checkpoint saved" in stderr and "Traceback" not in stderr
    last = ckpt.list_checkpoints(out / "checkpoints")[-1]
    state = ckpt.load_checkpoint(last)
    assert state["global_step"] >= int(first.stem.split("-")[1])
    more = ["--max-steps", str(state["global_step"] + 2), "--resume"]
    resumed = subprocess.run(_gfnet("finetune", *args, *more), env=_env(), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    # a different --max-steps is a different schedule but the same run: resume accepts it
    assert resumed.returncode == 0, resumed.stderr
    results = json.loads((out / "train_results.json").read_text())
    assert results["resumed_from_step"] == state["global_step"]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(image_folder, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    gfnet = Path(sys.executable).with_name("gfnet")
    if not torchrun.exists() or not gfnet.exists():
        pytest.skip("torchrun or the gfnet script is not installed beside this Python")
    out = tmp_path / "ddp"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python", str(gfnet),
               "finetune", *TINY_ARGS, "--dataset", str(image_folder), "--output-dir", str(out),
               "--epochs", "2", "--batch-size", "4", "--device", "cpu"]  # fmt: skip
    done = subprocess.run(command, env=_env() | {"OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "train_results.json").read_text())
    assert results["world_size"] == 2
    # 21 images (3 held out to validate), 4 per process per step, 2 processes: 3 steps an epoch
    assert results["global_step"] == 6 and results["num_eval_samples"] == 3
    assert results["test"]["count"] == 6  # the test split, scored over both processes
    assert (out / "model.safetensors").is_file()


# ---------------------------------------------------------------------- the loop's plumbing
def test_sampled_workers_persist_across_epochs(image_folder, tmp_path):
    """Map-style training keeps its DataLoader workers from one epoch to the next (forking
    them anew each epoch cost a start-up per epoch); the epochs' batches are unchanged."""
    from gfnet_cli.engine import distributed
    from gfnet_cli.engine.train.data import prepare_data, train_source

    config = _config(image_folder, tmp_path / "out", num_workers=1, batch_size=8)
    dist = distributed.setup("cpu")
    prepared = prepare_data(config, dist)
    train, classes = prepared.train, prepared.class_names
    model_config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32,
                               num_classes=len(classes))  # fmt: skip
    source = train_source(train, model_config, config, dist)
    assert source.loader.persistent_workers
    first = [b.indices.tolist() for b in source.batches(0, 0)]
    iterator = source.loader._iterator
    second = [b.indices.tolist() for b in source.batches(1, 0)]
    resumed = [b.indices.tolist() for b in source.batches(1, 1)]  # skipping one batch
    assert source.loader._iterator is iterator  # the same workers, reset for the epoch
    assert first != second and resumed == second[1:]
    in_process = train_source(train, model_config, _config(image_folder, tmp_path / "o2",
                                                           batch_size=8), dist)  # fmt: skip
    assert not in_process.loader.persistent_workers  # num_workers 0: nothing to keep
    assert [b.indices.tolist() for b in in_process.batches(1, 0)] == second


def test_checkpoint_state_is_moved_to_the_host_without_changing_it():
    optimizer = {"state": {0: {"step": torch.tensor(3.0)}},
                 "param_groups": [{"lr": 0.1, "params": [0]}]}  # fmt: skip
    state = {"model": {"w": torch.ones(2)}, "optimizer": optimizer, "rng": [{"seed": 1}],
             "n": None}  # fmt: skip
    moved = ckpt.to_host(state)  # tests/gpu: CUDA tensors come back on the CPU, equal
    assert moved["model"]["w"] is state["model"]["w"]  # CPU tensors are left as they are
    assert moved["optimizer"]["state"][0]["step"] is state["optimizer"]["state"][0]["step"]
    assert moved["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert moved["rng"] == [{"seed": 1}] and moved["n"] is None


# ---------------------------------------------------------------------- resumed metrics
def _epoch_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in ("epoch", "global_step", "train_loss", "top1", "eval_loss")}
            for r in rows if r["type"] == "eval"]  # fmt: skip


def test_a_resume_trains_in_the_forms_its_checkpoint_recorded(image_folder, tmp_path,
                                                              monkeypatch):  # fmt: skip
    """Training times the two filter forms on its first step; a resumed process, which has
    measured nothing, takes the interrupted run's choices from the checkpoint instead of
    timing again (a new timing could choose the other form, which rounds differently)."""
    clear_filter_form_choices()
    changes = dict(epochs=2, batch_size=5, depth=2)
    reference = finetune(_config(image_folder, tmp_path / "ref", **changes))
    assert reference.filter_forms and all("forward+backward" in case
                                          for case in reference.filter_forms)  # fmt: skip
    with pytest.raises(TrainingInterruptedError):
        finetune(_config(image_folder, tmp_path / "cut", **changes), _InterruptAt(2))
    saved = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "cut" / "checkpoints")[-1])
    assert saved["filter_forms"]
    clear_filter_form_choices()  # as a new process starts

    def no_timing(*args, **kwargs):
        raise AssertionError("the resumed run timed the forms instead of taking the recorded")

    monkeypatch.setattr(GlobalFilter, "_measure_forms", no_timing)
    resumed = finetune(_config(image_folder, tmp_path / "cut", resume=True, **changes))
    assert resumed.filter_forms == reference.filter_forms
    _assert_same_weights(tmp_path / "ref", tmp_path / "cut")


def test_deterministic_and_a_fixed_form_time_nothing(image_folder, tmp_path, monkeypatch):
    def no_timing(*args, **kwargs):
        raise AssertionError("timed the forms")

    clear_filter_form_choices()
    monkeypatch.setattr(GlobalFilter, "_measure_forms", no_timing)
    first = finetune(_config(image_folder, tmp_path / "a", epochs=1, deterministic=True))
    second = finetune(_config(image_folder, tmp_path / "b", epochs=1, filter_form="matmul"))
    assert first.filter_forms == {} and second.filter_forms == {}
    with pytest.raises(UsageError, match="filter_form must be one of auto, fft, matmul"):
        finetune(_config(image_folder, tmp_path / "c", filter_form="dft"))


def test_a_mid_epoch_resume_gives_the_same_epoch_metrics(image_folder, tmp_path):
    """The resumed epoch's train_loss averaged only the steps after the resume."""
    changes = dict(epochs=2, batch_size=5, drop_path=0.1, depth=2)
    finetune(_config(image_folder, tmp_path / "ref", **changes))
    with pytest.raises(TrainingInterruptedError):  # stops after step 3 of 5 in epoch 1
        finetune(_config(image_folder, tmp_path / "cut", **changes), _InterruptAt(2))
    finetune(_config(image_folder, tmp_path / "cut", resume=True, **changes))
    reference, resumed = _epoch_rows(tmp_path / "ref"), _epoch_rows(tmp_path / "cut")
    assert len(reference) == 2 and resumed == reference  # identical, not close
    history = json.loads((tmp_path / "cut" / "train_results.json").read_text())["history"]
    assert [e["train_loss"] for e in history] == [r["train_loss"] for r in reference]


@pytest.mark.slow
def test_sigterm_checkpoints_like_ctrl_c_and_the_run_resumes_exactly(image_folder, tmp_path):
    common = [*TINY_ARGS[:-2], "--dataset", image_folder, "--epochs", "3", "--batch-size", "2",
              "--checkpoint-every", "2", "--num-workers", "1", "--filter-form", "fft"]  # fmt: skip
    done = subprocess.run(_gfnet("finetune", *common, "--output-dir", tmp_path / "ref"),
                          env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    process = subprocess.Popen(_gfnet("finetune", *common, "--output-dir", cut), env=_env(),
                               text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    assert _wait_for_checkpoint(process, cut)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM" in stderr and "checkpoint saved" in stderr and "Traceback" not in stderr
    stopped = ckpt.load_checkpoint(ckpt.list_checkpoints(cut / "checkpoints")[-1])
    assert stopped["global_step"] % 12 != 0  # mid-epoch (12 steps an epoch)
    resumed = subprocess.run(_gfnet("finetune", *common, "--output-dir", cut, "--resume"),
                             env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_weights(tmp_path / "ref", cut)
    assert _epoch_rows(cut) == _epoch_rows(tmp_path / "ref")
