"""Regression tests for odd inputs found in QA: each names the input and the old failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gfnet_cli import GFNetConfig, create_model, save_model
from tests.conftest import assert_one_line_error


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3)
    return save_model(create_model(config), tmp_path_factory.mktemp("model") / "tiny")


def _images(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (20, 20), (40 * i, 0, 0)) for i in range(count)]


def _saved(tmp_path: Path, name: str, images: list, labels: list, label_feature=None) -> Path:
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": label_feature or datasets.Value("int64")}
    )
    path = tmp_path / name
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(
        str(path)
    )
    return path


# ------------------------------------------------------------------------------ evaluate
def test_evaluate_skips_rows_without_an_image(run_cli, tiny_model, tmp_path):
    # Was: "TypeError: expected str, bytes or os.PathLike object, not NoneType", exit 1.
    dataset = _saved(tmp_path, "holes", _images(2) + [None, None], [0, 1, 2, 0])
    result = run_cli("evaluate", "-m", tiny_model, "-d", dataset, "--num-workers", "0", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["num_samples"] == 2
    assert result.json()["num_skipped"] == 2


def test_text_labels_are_classes_for_evaluate_and_finetune(run_cli, tiny_model, tmp_path):
    # Was: "TypeError: '>=' not supported between 'str' and 'int'" (evaluate) and
    # "ValueError: invalid literal for int()" (finetune), exit 1.
    import datasets

    names = ["dog", "cat", "dog", "cat"]
    dataset = _saved(tmp_path, "text", _images(4), names, datasets.Value("string"))
    out = tmp_path / "run"
    result = run_cli("finetune", "--model", tiny_model, "--dataset", dataset, "--output-dir",
                     out, "--epochs", "1", "--batch-size", "2", "--num-workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "cat" in (out / "config.json").read_text()
    result = run_cli("evaluate", "-m", out, "-d", dataset, "--num-workers", "0", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["num_samples"] == 4
    # The user's dataset folder is read, never written to.
    assert not list(dataset.glob("cache-*"))


# ------------------------------------------------------------------------------ finetune
@pytest.fixture
def text_dataset(tmp_path) -> Path:
    import datasets

    return _saved(tmp_path, "data", _images(4), ["a", "b", "a", "b"], datasets.Value("string"))


@pytest.mark.parametrize(
    ("repo_id", "token", "message"),
    [
        ("bad//id", "hf_x", "org/name"),
        ("../x", "hf_x", "not a valid hub repository id"),
        ("me/x--y", "hf_x", "not a valid hub repository id"),
        ("me/fine", None, "hf auth login"),
    ],
)
def test_push_to_is_checked_before_training(
    run_cli, tiny_model, text_dataset, tmp_path, monkeypatch, repo_id, token, message
):
    # Was: the id (or the missing token) was refused only after training had finished.
    monkeypatch.setattr("huggingface_hub.utils.get_token", lambda: token)
    out = tmp_path / "run"
    result = run_cli("finetune", "--model", tiny_model, "--dataset", text_dataset, "--output-dir",
                     out, "--epochs", "1", "--num-workers", "0", "--push-to", repo_id)  # fmt: skip
    assert_one_line_error(result, 2, message)
    assert not (out / "model.safetensors").exists()
    assert "epoch" not in result.stderr


def test_push_refuses_an_invalid_repo_id_in_one_line(run_cli, tiny_model, monkeypatch):
    # Was: "HFValidationError: Repo id must use alphanumeric chars ..." with exit 1.
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    result = run_cli("push", tiny_model, "../x", "--dry-run")
    assert_one_line_error(result, 2, "not a valid hub repository id")


def test_negative_num_workers_is_a_usage_error(run_cli, tiny_model, text_dataset, tmp_path):
    # Was: "ValueError: num_workers option should be non-negative" (exit 1) after loading data.
    result = run_cli("finetune", "--model", tiny_model, "--dataset", text_dataset,
                     "--output-dir", tmp_path / "run", "--num-workers", "-1")  # fmt: skip
    assert_one_line_error(result, 2, "--num-workers")


# ------------------------------------------------------------------------------- convert
def test_convert_a_checkpoint_holding_only_model_ema(tmp_path):
    # Was: "the checkpoint holds no tensors" (exit 2) although the EMA weights were there.
    from gfnet_cli.hub.convert import convert_checkpoint
    from gfnet_cli.hub.resolve import load_model

    ema = create_model(GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3))
    path = tmp_path / "ema_only.pth"
    torch.save({"model_ema": ema.state_dict(), "epoch": 7}, path)
    result = convert_checkpoint(path, tmp_path / "out")
    assert result.used_ema
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(str(tmp_path / "out"))(x), ema.eval()(x))


def test_resume_falls_back_past_a_truncated_checkpoint_and_refuses_when_none_loads(tmp_path):
    # Was: with every checkpoint unreadable, --resume warned "no checkpoint" and silently
    # started the run afresh (and torch's multi-paragraph reason flooded the warning).
    from gfnet_cli.engine import checkpoint as ckpt
    from gfnet_cli.errors import CheckpointError

    directory = tmp_path / "checkpoints"
    for step in (1, 2):
        ckpt.save_checkpoint({"model": {}, "global_step": step}, directory, step)
    newest = ckpt.list_checkpoints(directory)[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    path, state = ckpt.latest_checkpoint(directory)
    assert state["global_step"] == 1 and path.name == ckpt.checkpoint_name(1)
    oldest = ckpt.list_checkpoints(directory)[0]
    oldest.write_bytes(oldest.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="overwrite") as error:
        ckpt.latest_checkpoint(directory)
    assert "\n" not in str(error.value) and "miniz" not in str(error.value)
    assert len(ckpt.list_checkpoints(directory)) == 2  # nothing deleted


# ------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("change", "message"),
    [({"interpolation": "cubic"}, "unknown interpolation"), ({"std": [0, 1, 1]}, "std")],
)
def test_bad_config_values_are_refused_at_load(run_cli, tiny_model, tmp_path, change, message):
    # Was: an unknown interpolation ended as "ValueError: ..." with exit 1, and a zero std
    # loaded fine and gave NaN scores.
    import json
    import shutil

    folder = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | change))
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert_one_line_error(run_cli("predict", "-m", folder, image), 2, message)


# ------------------------------------------------------------------------------- predict
def test_extremely_elongated_image_is_resized_only_where_the_crop_looks(monkeypatch):
    # Was: a 60000x1 strip made the eval transform allocate a 4.4-million-pixel-wide image
    # (1.8 GB resident; a 1000000x1 PNG of a few KB would take tens of GB).
    from PIL import ImageFilter

    from gfnet_cli.data.transforms import EvalTransform, center_crop, resize_shorter_side

    transform = EvalTransform(64)
    sizes = []
    resize = Image.Image.resize
    monkeypatch.setattr(
        Image.Image, "resize", lambda self, size, *a, **k: sizes.append(size) or resize(
            self, size, *a, **k)
    )  # fmt: skip
    for strip in (Image.new("RGB", (1_000_000, 1), (9, 9, 9)), Image.new("RGB", (1, 1_000_000))):
        assert transform(strip).shape == (3, 64, 64)
    assert max(w * h for w, h in sizes) <= 64 * 73
    # The pixels are those of the full resize (within 2 grey levels).
    noise = torch.randint(0, 256, (30, 3000, 3), generator=torch.Generator().manual_seed(0))
    image = Image.fromarray(noise.to(torch.uint8).numpy()).filter(ImageFilter.GaussianBlur(3))
    for picture in (image, image.transpose(Image.Transpose.TRANSPOSE)):
        full = center_crop(resize_shorter_side(picture, 73, Image.Resampling.BICUBIC), (64, 64))
        expected = transform.__class__(64, mean=(0, 0, 0), std=(1, 1, 1))(picture)
        reference = torch.from_numpy(np.asarray(full).copy()).permute(2, 0, 1)
        assert (expected * 255 - reference.float()).abs().max() <= 2.01


def test_eval_transform_is_unchanged_for_ordinary_aspect_ratios():
    from gfnet_cli.data.transforms import EvalTransform, center_crop, resize_shorter_side

    transform = EvalTransform(64, mean=(0, 0, 0), std=(1, 1, 1))
    for size in ((900, 60), (60, 900), (257, 64)):
        noise = torch.randint(0, 256, (size[1], size[0], 3), generator=torch.Generator())
        image = Image.fromarray(noise.to(torch.uint8).numpy())
        full = center_crop(resize_shorter_side(image, 73, Image.Resampling.BICUBIC), (64, 64))
        reference = torch.from_numpy(np.asarray(full).copy()).permute(2, 0, 1)
        assert torch.equal((transform(image) * 255).round(), reference.float())


# -------------------------------------------------------------------------------- global
@pytest.mark.parametrize(
    "args",
    [("predict",), ("predict", "x.png", "--top-k", "abc"), ("frob",), ("evaluate", "-q")],
)
def test_command_line_mistakes_are_one_error_line(run_cli, args):
    # Was: click's boxed multi-line "Usage: ... ╭─ Error ─╮" panel, not "Error: ...".
    result = run_cli(*args)
    assert_one_line_error(result, 2, "--help")
    assert "╭" not in result.stderr


def test_ctrl_c_says_interrupted(run_cli, monkeypatch):
    # Was: a silent exit 130.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("gfnet_cli.cli.predict_cmd.predict", interrupted)
    assert_one_line_error(run_cli("predict", "x.png"), 130, "interrupted")


def test_no_arguments_shows_help_and_help_exits_0(run_cli):
    assert run_cli().exit_code == 2
    result = run_cli("predict", "--help")
    assert result.exit_code == 0 and "--top-k" in result.stdout


def test_empty_saved_dataset_is_named_as_empty(tmp_path, run_cli):
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}
    )
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=features)
    empty.save_to_disk(str(tmp_path / "empty"))
    from gfnet_cli.data.datasets import DatasetError, load_image_dataset

    with pytest.raises(DatasetError, match="empty"):
        load_image_dataset(str(tmp_path / "empty"))


def test_broken_symlink_is_named(tmp_path):
    from gfnet_cli.data.images import ImageReadError, open_image

    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "missing-target.jpg")
    with pytest.raises(ImageReadError, match="broken symbolic link"):
        open_image(link)
