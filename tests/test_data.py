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


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("mode", "make", "suffix", "expected"),
    [
        ("L", lambda: Image.new("L", (6, 4), 77), ".png", (77, 77, 77)),
        ("LA", lambda: Image.new("LA", (6, 4), (10, 0)), ".png", (255, 255, 255)),
        ("RGBA", lambda: Image.new("RGBA", (6, 4), (255, 0, 0, 128)), ".png", (255, 127, 127)),
        ("CMYK", lambda: Image.new("CMYK", (6, 4), (0, 255, 255, 0)), ".jpg", (255, 0, 0)),
        ("1", lambda: Image.new("1", (6, 4), 1), ".png", (255, 255, 255)),
        ("I;16", lambda: Image.new("I;16", (6, 4), 65535), ".png", (255, 255, 255)),
    ],
)
def test_every_mode_becomes_rgb(tmp_path, mode, make, suffix, expected):
    path = _save(make(), tmp_path / f"image{suffix}")
    assert Image.open(path).mode == mode  # the file really is in that mode
    image = open_image(path)
    assert image.mode == "RGB" and image.size == (6, 4)
    assert image.getpixel((0, 0)) == pytest.approx(expected, abs=2)  # JPEG rounding


def test_palette_transparency_is_composited_on_white(tmp_path):
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 1), 1)
    path = _save(palette, tmp_path / "p.png", transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    image = open_image(path)
    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent, not black
    assert image.getpixel((1, 1)) == (255, 0, 0)


def test_sixteen_bit_values_are_scaled_not_clipped(tmp_path):
    import numpy as np

    array = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369).astype(np.uint16)
    path = _save(Image.fromarray(array), tmp_path / "g16.png")
    image = open_image(path)
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((3, 3)) == (255, 255, 255)
    assert image.getpixel((1, 1))[0] == round(5 * 4369 / 257)  # mid-grey stays mid-grey


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(image, tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = open_image(path)
    assert upright.size == (20, 40)
    red, green, blue = upright.getpixel((10, 3))  # the left band is now on top
    assert blue > 200 and red < 50
    assert open_image(path.read_bytes()).size == (20, 40)


def _png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [10_000, 100_000])  # over the warning level; over 2x of it
def test_decompression_bomb_is_refused_without_decoding(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(side, side))
    assert path.stat().st_size < 200
    with pytest.raises(ImageReadError, match="decompression bomb") as info:
        open_image(path)
    assert "bomb" in info.value.reason and str(path) not in info.value.reason


def test_truncated_files_are_reported(tmp_path):
    for suffix in (".jpg", ".png"):
        full = _save(Image.effect_noise((64, 64), 40).convert("RGB"), tmp_path / f"f{suffix}")
        data = full.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageReadError, match="truncated"):
            open_image(cut)


# ---------------------------------------------------------------------- batches on a GPU
def _batch():
    from gfnet_cli.data.datasets import Batch

    return Batch(torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).reshape(4, 3, 2, 2),
                 torch.tensor([1, -1, 0, 2]), torch.tensor([10, 11, 12, 13]),
                 [(14, "unreadable")], worker=3)  # fmt: skip


def test_dataloader_pinning_pins_a_batch_and_keeps_its_fields(monkeypatch):
    """DataLoader's pin_memory thread calls ``.pin_memory()`` on custom types and returns any
    other object unpinned. A CPU-only build cannot pin (tests/gpu checks is_pinned()), so
    pinning is recorded here."""
    from torch.utils.data._utils.pin_memory import pin_memory

    from gfnet_cli.data.datasets import Batch

    pinned: list[torch.Tensor] = []

    def fake_pin(tensor, *args, **kwargs):
        copy = tensor.clone()
        pinned.append(copy)
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = _batch()
    result = pin_memory(batch, "cuda")  # what the DataLoader's pin thread runs per batch
    assert isinstance(result, Batch) and result is not batch
    assert result.images is pinned[0] and result.labels is pinned[1]  # the tensors that travel
    assert torch.equal(result.images, batch.images) and torch.equal(result.labels, batch.labels)
    assert result.indices is batch.indices  # stays on the host
    assert result.failures == batch.failures and result.worker == 3 and result.rows == 5


def test_labelled_rows_are_picked_after_the_transfer():
    batch = _batch()
    images, labels = batch.rows_to(torch.device("cpu"))
    assert labels.tolist() == [1, 0, 2]
    assert torch.equal(images, batch.images[[0, 2, 3]])
    batch.labels = torch.tensor([0, 1, 2, 3])
    images, labels = batch.rows_to(torch.device("cpu"))
    assert images.data_ptr() == batch.images.data_ptr()  # every row labelled: no copy
