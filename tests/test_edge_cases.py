"""Regression tests for odd inputs found in QA: each names the input and the old failure."""

from __future__ import annotations

from pathlib import Path

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
