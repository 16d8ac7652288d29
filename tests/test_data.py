"""Image opening, the evaluation transform and dataset loading."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gfnet_cli import create_model
from gfnet_cli.data.datasets import (
    DatasetError,
    TorchImageDataset,
    collate_skipping_failures,
    load_image_dataset,
)
from gfnet_cli.data.images import ImageReadError, expand_inputs, open_image
from gfnet_cli.data.transforms import EvalTransform, eval_transform


@pytest.mark.parametrize("size", [64, 224, 384])
def test_eval_transform_matches_the_authors(data_dir, size):
    expected = load_file(str(data_dir / "preprocess_expected.safetensors"))[f"eval_{size}"]
    image = open_image(data_dir / "preprocess_input.png")
    out = EvalTransform(size)(image)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_eval_transform_follows_the_config():
    config = create_model("gfnet-ti").config.replace(crop_pct=1.0, img_size=64)
    transform = eval_transform(config)
    assert transform.resize == 64 and transform.crop == (64, 64)
    assert eval_transform(config, img_size=(32, 48)).crop == (32, 48)


def test_image_errors(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        open_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        open_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageReadError, match="not an image"):
        open_image(tmp_path / "text.jpg")


def test_expand_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/1.png", "a/2.JPG", "a/notes.txt", "3.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name) if not name.endswith("txt") else (
            tmp_path / name
        ).write_text("x")
    found = expand_inputs([tmp_path / "a", str(tmp_path / "*.png"), "missing.png"])
    assert found == [
        str(tmp_path / "a/1.png"),
        str(tmp_path / "a/2.JPG"),
        str(tmp_path / "3.png"),
        "missing.png",
    ]


def _image_folder(root, splits=("train", "validation"), classes=("cat", "dog"), per_class=3):
    for split in splits:
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (20, 16), (index * 100, i * 30, 50)).save(folder / f"{i}.png")
    return root


def test_image_folder_with_splits(tmp_path):
    root = _image_folder(tmp_path / "data")
    data = load_image_dataset(str(root))
    assert data.split == "validation" and data.class_names == ["cat", "dog"]
    assert len(data) == 6 and data.image_column == "image" and data.label_column == "label"
    train = load_image_dataset(str(root), "train")
    assert train.split == "train"
    with pytest.raises(DatasetError, match="split 'test' not found"):
        load_image_dataset(str(root), "test")


def test_save_to_disk_folder_and_corrupt_images(tmp_path):
    import datasets

    images = []
    for i in range(4):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    images[2] = {"bytes": b"not really a png", "path": None}
    features = datasets.Features(
        {"img": datasets.Image(), "fine": datasets.ClassLabel(names=["a", "b"])}
    )
    ds = datasets.Dataset.from_dict({"img": images, "fine": [0, 1, 0, 1]}, features=features)
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "disk"))
    data = load_image_dataset(str(tmp_path / "disk"))
    assert (data.split, data.image_column, data.label_column) == ("test", "img", "fine")
    torch_ds = TorchImageDataset(data, EvalTransform(8, crop_pct=1.0))
    batch = collate_skipping_failures([torch_ds[i] for i in range(4)])
    assert batch.images.shape == (3, 3, 8, 8)
    assert batch.labels.tolist() == [0, 1, 1] and batch.indices.tolist() == [0, 1, 3]
    assert len(batch.failures) == 1 and batch.failures[0][0] == 2


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        load_image_dataset(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        load_image_dataset(str(tmp_path / "empty"))
