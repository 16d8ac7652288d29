"""gfnet embed / gfnet_cli.embed: pooled pre-logits per image, files, errors, a linear probe."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from gfnet_cli import create_model
from gfnet_cli.commands.embed import embed, read_embeddings
from gfnet_cli.commands.predict import predict
from gfnet_cli.data.transforms import eval_transform
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.serialization import save_model
from tests.conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("gfnet-ti", patch_size=8, embed_dim=16, depth=2, img_size=32,
                         num_classes=3)  # fmt: skip
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def images(tmp_path) -> Path:
    """Five readable images in a folder (two in a sub-folder) and one that is not an image."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.jpg", "c.png", "sub/d.png", "sub/e.png"]):
        array = rng.integers(0, 255, size=(30 + i, 40, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / name)
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def _expected(model_dir: Path, paths: list[Path]) -> torch.Tensor:
    """What the model's own API gives: forward_head(forward_features(x), pre_logits=True)."""
    from gfnet_cli.hub.resolve import load_model

    model = load_model(str(model_dir))
    transform = eval_transform(model.config)
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return model.forward_head(model.forward_features(batch), pre_logits=True)


def test_embed_returns_pooled_pre_logits_in_input_order(tiny_model, images):
    inputs = [images / "c.png", images, images / "missing.png"]
    result = embed(inputs, str(tiny_model), batch_size=2, device="cpu")
    expected_order = ["c.png", "a.png", "b.jpg", "c.png", "sub/d.png", "sub/e.png"]
    assert result.images == [str(images / name) for name in expected_order]
    assert result.embeddings.shape == (6, 16) and result.embeddings.dtype == torch.float32
    torch.testing.assert_close(
        result.embeddings, _expected(tiny_model, [images / n for n in expected_order])
    )
    # the same error entries as predict, for the same inputs
    predicted = predict(inputs, str(tiny_model), device="cpu")
    assert result.errors == [p.to_dict() for p in predicted if not p.ok]
    assert [e["image"] for e in result.errors] == [
        str(images / "broken.png"),
        str(images / "missing.png"),
    ]
    assert result.output is None  # nothing asked to be written
    one_by_one = embed(inputs, str(tiny_model), batch_size=1, device="cpu")
    torch.testing.assert_close(one_by_one.embeddings, result.embeddings, rtol=1e-5, atol=1e-6)


def test_safetensors_and_parquet_files(tiny_model, images, tmp_path):
    progress = []
    out = tmp_path / "out" / "emb.safetensors"  # missing parent folders are made
    result = embed(images, str(tiny_model), output=out, device="cpu", batch_size=4,
                   progress=lambda done, total: progress.append((done, total)))  # fmt: skip
    assert progress == [(4, 6), (6, 6)]
    assert result.output == out and result.format == "safetensors"
    with safe_open(str(out), framework="pt") as handle:
        assert list(handle.keys()) == ["embeddings"]
        stored = handle.get_tensor("embeddings")
        metadata = handle.metadata()
    assert stored.dtype == torch.float32 and stored.shape == (5, 16)
    torch.testing.assert_close(stored, result.embeddings)
    assert json.loads(metadata["images"]) == result.images
    assert metadata["model"] == str(tiny_model)

    parquet = tmp_path / "emb.parquet"
    embed(images, str(tiny_model), output=parquet, device="cpu")
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    assert table.column_names == ["image", "embedding"]
    assert table.column("image").to_pylist() == result.images
    vectors, names = read_embeddings(parquet)
    assert names == result.images
    torch.testing.assert_close(vectors, result.embeddings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.parquet", "images", "out"]


def test_existing_output_needs_overwrite_and_is_kept_otherwise(tiny_model, images, tmp_path):
    out = tmp_path / "emb.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(UsageError, match="already exists: choose another name") as info:
        embed(images, str(tiny_model), output=out, device="cpu")
    assert info.value.params == ("output", "overwrite")
    assert out.read_bytes() == b"precious"
    embed(images, str(tiny_model), output=out, overwrite=True, device="cpu")
    assert read_embeddings(out)[0].shape == (5, 16)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_cli_writes_the_file_and_reports_failures_after_everything(run_cli, tiny_model, images):
    out = images.parent / "emb.safetensors"
    result = run_cli("embed", images, "--model", tiny_model, "--output", out, "--json", "-b", "2")
    assert_one_line_error(result, 2, "1 of 6 inputs could not be read")
    document = result.json()  # stdout: one JSON document
    assert document["output"] == str(out) and document["format"] == "safetensors"
    assert (document["num_images"], document["dim"], document["model"]) == (5, 16, str(tiny_model))
    assert document["errors"] == [
        {
            "image": str(images / "broken.png"),
            "error": "not an image (or a format Pillow cannot read)",
        }
    ]
    assert read_embeddings(out)[0].shape == (5, 16)

    again = run_cli("embed", images / "a.png", "-m", tiny_model, "-o", out)
    assert_one_line_error(again, 2, "already exists: choose another name or pass --overwrite")
    assert "--output" in again.stderr
    replaced = run_cli("embed", images / "a.png", "-m", tiny_model, "-o", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.stderr
    assert "1 embeddings of dimension 16 written to" in replaced.stdout
    assert read_embeddings(out)[1] == [str(images / "a.png")]


def test_cli_refuses_bad_outputs_and_writes_nothing_when_nothing_is_readable(
    run_cli, tiny_model, images, tmp_path
):
    result = run_cli("embed", images, "-m", tiny_model, "-o", tmp_path / "emb.npy")
    assert_one_line_error(result, 2, "--output must end in .safetensors or .parquet")
    result = run_cli("embed", images, "-m", tiny_model, "-o", tmp_path)
    assert_one_line_error(result, 2)
    out = tmp_path / "none.safetensors"
    result = run_cli("embed", images / "broken.png", "-m", tiny_model, "-o", out)
    assert_one_line_error(result, 2, "1 of 1 inputs could not be read")
    assert "was not written" in result.stderr and not out.exists()
    result = run_cli("embed", images, "-m", tmp_path / "no-model", "-o", out)
    assert_one_line_error(result, 2)
    result = run_cli("embed", images, "-m", tiny_model, "-o", out, "--batch-size", "0")
    assert_one_line_error(result, 2, "--batch-size must be at least 1")


def test_embed_is_a_public_function():
    code = "import gfnet_cli; f = gfnet_cli.embed; print(callable(f), f.__module__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "gfnet_cli.commands.embed"]


# ------------------------------------------------------------------- a linear probe
def _digit_files(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for digit in range(10):
        found = sorted((root / split / str(digit)).glob("*.png"))
        files += found
        labels += [digit] * len(found)
    return files, np.array(labels)


@pytest.mark.slow
def test_a_linear_probe_on_digit_embeddings_separates_the_classes(tmp_path):
    # The digits demo (scripts/export_digits.py), a small GFNet trained a few epochs, then a
    # logistic regression on the embeddings of the train split, scored on the test split.
    from sklearn.linear_model import LogisticRegression

    from gfnet_cli.engine.train import TrainConfig, finetune

    spec = importlib.util.spec_from_file_location(
        "export_digits", ROOT / "scripts/export_digits.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.export_digits(tmp_path / "digits", size=16)
    config = TrainConfig(
        model="gfnet-ti", dataset=str(tmp_path / "digits"), output_dir=tmp_path / "run",
        from_scratch=True, patch_size=4, embed_dim=64, depth=1, img_size=16, crop_pct=1.0,
        augment=False, epochs=5, lr=8e-3, warmup_epochs=0.5, batch_size=64, num_workers=0,
        checkpoint_every=0, device="cpu", eval_split="test",
    )  # fmt: skip
    finetune(config)

    def probe_accuracy(model) -> float:
        train_files, train_labels = _digit_files(tmp_path / "digits", "train")
        test_files, test_labels = _digit_files(tmp_path / "digits", "test")
        train = embed(train_files, model, batch_size=256, device="cpu")
        test = embed(test_files, model, batch_size=256, device="cpu")
        assert not train.errors and train.embeddings.shape == (len(train_files), 64)
        probe = LogisticRegression(max_iter=2000).fit(train.embeddings.numpy(), train_labels)
        return probe.score(test.embeddings.numpy(), test_labels)

    trained = probe_accuracy(tmp_path / "run")
    untrained = probe_accuracy(
        create_model(
            "gfnet-ti",
            patch_size=4,
            embed_dim=64,
            depth=1,
            img_size=16,
            num_classes=10,
            crop_pct=1.0,
        )  # fmt: skip
    )
    assert trained >= 0.9, trained
    assert trained > untrained + 0.3, (trained, untrained)  # the training is what separates them
