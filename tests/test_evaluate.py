"""``evaluate`` and ``gfnet evaluate``: metrics checked against a hand computation."""

from __future__ import annotations

import io
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gfnet_cli import GFNetConfig, create_model, save_model
from gfnet_cli.commands.evaluate import LabelMismatchError, evaluate
from gfnet_cli.data.images import open_image
from gfnet_cli.data.transforms import eval_transform
from gfnet_cli.errors import UsageError
from tests.conftest import assert_one_line_error

CLASSES = ["cat", "dog", "bird", "fish", "frog", "horse", "ship"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(1)
    config = GFNetConfig(
        patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=7, class_names=CLASSES
    )
    model = create_model(config).eval()
    with torch.no_grad():  # a sharper head, so predictions differ between images
        model.head.weight.mul_(40)
    folder = save_model(model, tmp_path_factory.mktemp("model") / "tiny")
    return folder, model


def _png(seed: int, size=(36, 28)) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def _expected(model, images: list, targets: list[int]) -> dict:
    """Top-1, top-5 and mean CE computed by hand: open, transform, forward, compare."""
    transform = eval_transform(model.config)
    batch = torch.stack([transform(open_image(image)) for image in images])
    with torch.no_grad():
        logits = model(batch)
    target = torch.tensor(targets)
    top5 = logits.topk(5, dim=-1).indices
    return {
        "top1": (logits.argmax(-1) == target).float().mean().item(),
        "top5": (top5 == target[:, None]).any(-1).float().mean().item(),
        "loss": F.cross_entropy(logits, target).item(),
        "num_samples": len(targets),
    }


def _check(result, expected) -> None:
    assert result.num_samples == expected["num_samples"]
    assert result.top1 == pytest.approx(expected["top1"], abs=1e-6)
    assert result.top5 == pytest.approx(expected["top5"], abs=1e-6)
    assert result.loss == pytest.approx(expected["loss"], rel=1e-4)


@pytest.fixture
def image_folder(tmp_path):
    """validation/<class>/*.png for every model class; the folder order is alphabetical."""
    images, targets = [], []
    for index, name in enumerate(CLASSES):
        folder = tmp_path / "folder" / "validation" / name
        folder.mkdir(parents=True)
        for i in range(2):
            path = folder / f"{i}.png"
            path.write_bytes(_png(index * 10 + i))
            images.append(path)
            targets.append(index)
    (tmp_path / "folder" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "folder" / "train" / "cat" / "x.png").write_bytes(_png(99))
    return tmp_path / "folder", images, targets


def test_image_folder_in_another_class_order_is_mapped_by_name(tiny, image_folder):
    folder, model = tiny
    root, images, targets = image_folder
    result = evaluate(folder, str(root), num_workers=0)
    assert result.split == "validation" and result.label_mapping == "by_name"
    assert 0 < result.top1 < 1 or result.top5 < 1  # a non-trivial check
    _check(result, _expected(model, images, targets))
    by_label = {row["label"]: row for row in result.per_class}
    assert set(by_label) == set(CLASSES) and all(r["num_samples"] == 2 for r in by_label.values())
    # Scoring by index instead (the folder's alphabetical order) gives other targets.
    wrong = evaluate(folder, str(root), num_workers=0, label_order="index")
    alphabetical = sorted(CLASSES)
    _check(wrong, _expected(model, images, [alphabetical.index(CLASSES[t]) for t in targets]))


def _disk_dataset(path, names, rows):
    import datasets

    features = datasets.Features(
        {"img": datasets.Image(), "fine": datasets.ClassLabel(names=names)}
    )
    data = datasets.Dataset.from_dict(
        {
            "img": [{"bytes": b, "path": None} for b, _ in rows],
            "fine": [label for _, label in rows],
        },
        features=features,
    )
    datasets.DatasetDict({"test": data}).save_to_disk(str(path))
    return path


def test_save_to_disk_folder_with_a_corrupt_image_and_workers(tiny, tmp_path, run_cli):
    folder, model = tiny
    rows = [(_png(i), i % 7) for i in range(9)]
    rows[4] = (b"\x89PNG\r\n\x1a\n broken", 4)
    disk = _disk_dataset(tmp_path / "disk", CLASSES, rows)
    good = [r for i, r in enumerate(rows) if i != 4]
    expected = _expected(model, [b for b, _ in good], [t for _, t in good])
    result = evaluate(folder, str(disk), batch_size=4, num_workers=1)
    assert result.label_mapping == "identity" and result.num_skipped == 1
    assert result.skipped[0]["index"] == 4 and "not an image" in result.skipped[0]["error"]
    _check(result, expected)

    out = tmp_path / "eval_results.json"
    cli = run_cli(
        "evaluate",
        "--model",
        folder,
        "--dataset",
        disk,
        "--num-workers",
        "0",
        "--batch-size",
        "3",
        "--json",
        "--output",
        out,
    )
    assert cli.exit_code == 0, cli.stderr
    summary = json.loads(cli.stdout)
    assert set(summary) >= {
        "model",
        "dataset",
        "split",
        "num_samples",
        "top1",
        "top5",
        "loss",
        "images_per_second",
    }
    assert summary["num_skipped"] == 1 and summary["split"] == "test"
    assert summary["top1"] == pytest.approx(expected["top1"], abs=1e-6)
    assert "skipped sample 4" in cli.stderr
    saved = json.loads(out.read_text())
    assert saved["top1"] == summary["top1"] and saved["num_samples"] == 8
    assert saved["model"] == str(folder) and saved["dataset"] == str(disk)
    assert saved["img_size"] == [32, 32] and saved["task"] == "image-classification"
    per_class = {row["label"]: row for row in saved["per_class"]}
    assert per_class["cat"]["num_samples"] == 2 and "frog" not in per_class  # its one image was bad

    table = run_cli("evaluate", "--model", folder, "--dataset", disk, "--num-workers", "0")
    assert table.exit_code == 0 and "top-1" in table.stdout and "skipped" in table.stdout


def test_streaming_and_max_samples(tiny, tmp_path):
    folder, model = tiny
    rows = [(_png(i), i % 7) for i in range(10)]
    disk = _disk_dataset(tmp_path / "disk", CLASSES, rows)
    streamed = evaluate(
        folder,
        str(disk),
        streaming=True,
        num_workers=0,
        batch_size=4,
        max_samples=6,
    )
    _check(streamed, _expected(model, [b for b, _ in rows[:6]], [t for _, t in rows[:6]]))
    spread = evaluate(folder, str(disk), max_samples=5, num_workers=0)
    picked = [rows[i] for i in (0, 2, 4, 6, 8)]  # evenly spaced, not the first five
    _check(spread, _expected(model, [b for b, _ in picked], [t for _, t in picked]))


def test_progress_is_reported_through_the_callback_only(tiny, tmp_path, capsys):
    folder, _ = tiny
    rows = [(_png(i), i % 7) for i in range(7)]
    rows[2] = (b"not a picture", 2)  # skipped samples count as done too
    disk = _disk_dataset(tmp_path / "disk", CLASSES, rows)
    calls = []
    evaluate(folder, str(disk), batch_size=3, num_workers=0, progress=lambda *a: calls.append(a))
    assert calls == [(3, 7), (6, 7), (7, 7)]
    streamed = []
    evaluate(folder, str(disk), batch_size=4, num_workers=0, streaming=True,
             progress=lambda *a: streamed.append(a))  # fmt: skip
    assert streamed == [(4, None), (7, None)]  # a stream's length is not known up front
    assert _output_besides_logging(
        capsys, lambda: evaluate(folder, str(disk), batch_size=3, num_workers=0)
    ) == ("", "")  # silent by default: no bar, only logging


def _output_besides_logging(capsys, run) -> tuple[str, str]:
    capsys.readouterr()
    logging.disable(logging.CRITICAL)
    try:
        run()
    finally:
        logging.disable(logging.NOTSET)
    return tuple(capsys.readouterr())


def test_unmatched_class_names_stop_before_evaluating(tiny, tmp_path, run_cli, monkeypatch):
    folder, _ = tiny
    disk = _disk_dataset(tmp_path / "disk", ["cat", "dog", "plane"], [(_png(0), 2)])
    import gfnet_cli.commands.evaluate as module

    def no_loader(*args, **kwargs):
        raise AssertionError("evaluation started")

    monkeypatch.setattr(module.torch.utils.data, "DataLoader", no_loader)
    with pytest.raises(LabelMismatchError, match="'plane'"):
        evaluate(folder, str(disk))
    result = run_cli("evaluate", "--model", folder, "--dataset", disk)
    assert_one_line_error(result, 2, "--label-order index")
    assert "'plane'" in result.stderr and "'bird'" in result.stderr  # both sides shown
    monkeypatch.undo()
    accepted = evaluate(folder, str(disk), label_order="index", num_workers=0)
    assert accepted.num_samples == 1 and accepted.label_mapping == "index"


def test_usage_errors(tiny, tmp_path, run_cli):
    folder, _ = tiny
    for option, param in (
        ({"batch_size": 0}, "batch_size"),
        ({"max_samples": 0}, "max_samples"),
        ({"num_workers": -1}, "num_workers"),
        ({"label_order": "size"}, "label_order"),
    ):
        with pytest.raises(UsageError, match=f"^{param} must be") as info:
            evaluate(folder, str(tmp_path), **option)
        assert info.value.param == param
    assert_one_line_error(
        run_cli("evaluate", "--model", folder, "--dataset", tmp_path / "none"), 2, "no such folder"
    )
    many = _disk_dataset(tmp_path / "many", [f"c{i}" for i in range(9)], [(_png(0), 8)])
    assert_one_line_error(
        run_cli("evaluate", "--model", folder, "--dataset", many, "--label-order", "index"),
        2,
        "9 classes",
    )
    assert_one_line_error(
        run_cli("evaluate", "--model", folder, "--dataset", many, "--label-order", "size"), 2
    )


def test_an_existing_output_is_refused_before_any_work(tiny, tmp_path, run_cli):
    """It replaced a .safetensors with JSON, after the whole evaluation."""
    folder, _ = tiny
    existing = tmp_path / "weights.safetensors"
    existing.write_bytes(b"precious")
    result = run_cli("evaluate", "--model", folder, "--dataset", tmp_path / "no-such-data",
                     "--output", existing)  # fmt: skip
    assert_one_line_error(result, 2, "already exists")
    assert "--overwrite" in result.stderr
    assert existing.read_bytes() == b"precious"
    with pytest.raises(UsageError, match="already exists"):
        evaluate(folder, str(tmp_path / "no-such-data"), output=existing)


def test_output_with_overwrite_replaces_it_and_stale_partials_go(tiny, image_folder, run_cli):
    folder, _ = tiny
    data, _, _ = image_folder
    out = data.parent / "result.json"
    out.write_text("old")
    stale = data.parent / ".result.json.k3j2.tmp"  # a killed earlier write
    stale.write_bytes(b"")
    assert_one_line_error(
        run_cli("evaluate", "--model", folder, "--dataset", data, "--output", out), 2, "exists"
    )
    result = run_cli("evaluate", "--model", folder, "--dataset", data, "--num-workers", "0",
                     "--output", out, "--overwrite")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(out.read_text())["num_samples"] == 14
    assert not stale.exists() and not (data.parent / ".result.json.lock").exists()
