"""``predict`` and ``gfnet predict``: batched top-k, mixed good and bad inputs, --img-size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from gfnet_cli import GFNetConfig, create_model, save_model
from gfnet_cli.commands.predict import ImagePrediction, predict
from gfnet_cli.data.images import open_image
from gfnet_cli.data.transforms import eval_transform
from gfnet_cli.errors import UsageError
from tests.conftest import assert_one_line_error

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture
def tiny_model(tmp_path):
    config = GFNetConfig(
        patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3, class_names=CLASSES
    )
    model = create_model(config).eval()
    return save_model(model, tmp_path / "tiny"), model


def _picture(path, color, size=(40, 30)):
    image = Image.new("RGB", size, color)
    image.paste((255 - color[0], 30, 200), (5, 5, 20, 20))
    image.save(path)
    return path


def _expected(model, path, size=None):
    tensor = eval_transform(model.config, size)(open_image(path))
    with torch.no_grad():
        probs = model(tensor[None]).softmax(-1)[0]
    return probs


def test_mixed_inputs_predict_the_good_and_report_the_bad(tmp_path, tiny_model, run_cli):
    folder, model = tiny_model
    good = _picture(tmp_path / "a.png", (200, 10, 10))
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    in_folder = _picture(tmp_path / "sub" / "deep" / "b.jpg", (10, 200, 10))
    (tmp_path / "sub" / "notes.txt").write_text("not an image, not listed")
    (tmp_path / "globbed").mkdir()
    globbed = [_picture(tmp_path / "globbed" / f"g{i}.png", (i * 50, 90, 9)) for i in range(2)]
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not a picture")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "no_images").mkdir()
    inputs = [
        good,
        tmp_path / "missing.jpg",
        tmp_path / "sub",
        tmp_path / "empty.png",
        str(tmp_path / "globbed" / "*.png"),
        tmp_path / "text.jpg",
        tmp_path / "truncated.png",
        tmp_path / "no_images",
        str(tmp_path / "nothing" / "*.png"),
    ]
    result = run_cli(
        "predict", *inputs, "--model", folder, "--top-k", "2", "--json", "--batch-size", "2"
    )
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "6 of 10 inputs could not be read" in result.stderr
    entries = result.json()
    assert [e["image"] for e in entries] == [
        str(good),
        str(tmp_path / "missing.jpg"),
        str(in_folder),
        str(tmp_path / "empty.png"),
        *map(str, globbed),
        str(tmp_path / "text.jpg"),
        str(tmp_path / "truncated.png"),
        str(tmp_path / "no_images"),
        str(tmp_path / "nothing" / "*.png"),
    ]
    errors = {e["image"].rsplit("/", 1)[-1]: e.get("error") for e in entries}
    assert "no such file" in errors["missing.jpg"]
    assert "empty" in errors["empty.png"]
    assert "not an image" in errors["text.jpg"]
    assert "truncated" in errors["truncated.png"]
    assert "no images" in errors["no_images"]
    assert "no such file" in errors["*.png"]
    for entry, path in zip(
        [entries[0], entries[2], entries[4], entries[5]], [good, in_folder, *globbed], strict=True
    ):
        assert set(entry) == {"image", "predictions"}
        probs = _expected(model, path)
        top = probs.topk(2)
        assert [p["index"] for p in entry["predictions"]] == top.indices.tolist()
        assert [p["label"] for p in entry["predictions"]] == [CLASSES[i] for i in top.indices]
        assert [p["score"] for p in entry["predictions"]] == pytest.approx(
            top.values.tolist(), abs=1e-5
        )


def test_table_output_and_success_exit(tmp_path, tiny_model, run_cli):
    folder, _ = tiny_model
    image = _picture(tmp_path / "x.png", (1, 2, 3))
    result = run_cli("predict", image, "--model", folder)
    assert result.exit_code == 0, result.stderr
    for word in ("rank", "class", "score", "x.png", "cat", "dog", "bird"):
        assert word in result.stdout
    json_result = run_cli("predict", image, "--model", folder, "--json")
    assert json_result.exit_code == 0
    assert len(json.loads(json_result.stdout)) == 1  # stdout is one JSON document


def test_each_unreadable_input_has_its_reason_on_stderr(tmp_path, tiny_model, run_cli):
    # A user redirecting stdout (the table, or --json) must still learn why a file failed.
    folder, _ = tiny_model
    good = _picture(tmp_path / "good.png", (1, 2, 3))
    (tmp_path / "notes.jpg").write_text("hello, not a picture")
    for extra in ((), ("--json",)):
        result = run_cli("predict", good, tmp_path / "notes.jpg", tmp_path / "gone.png",
                         "--model", folder, *extra)  # fmt: skip
        assert result.exit_code == 2, result.stderr
        err = " ".join(result.stderr.split())
        assert f"{tmp_path / 'notes.jpg'}: " in err and "not an image" in err, err
        assert f"{tmp_path / 'gone.png'}: no such file" in err, err
        assert "2 of 3 inputs could not be read" in err
        assert "not an image" not in (result.stdout if not extra else "")
        assert "good.png" in result.stdout


def test_img_size_runs_the_model_at_another_resolution(tmp_path, tiny_model):
    folder, model = tiny_model
    image = _picture(tmp_path / "x.png", (120, 60, 30), size=(90, 70))
    [result] = predict([image], str(folder), img_size=48, top_k=3)
    resized = create_model(model.config)
    resized.load_state_dict(model.state_dict())
    resized.set_image_size(48)
    resized.eval()
    expected = _expected(resized, image, 48)
    scores = {p["index"]: p["score"] for p in result.predictions}
    assert [scores[i] for i in range(3)] == pytest.approx(expected.tolist(), abs=1e-5)


def test_library_accepts_a_loaded_model_and_pil_images(tiny_model):
    _, model = tiny_model
    results = predict([Image.new("L", (33, 41), 90)], model, top_k=10)
    assert isinstance(results[0], ImagePrediction) and results[0].image == "<image 0>"
    assert len(results[0].predictions) == 3  # top_k capped at the class count
    assert sum(p["score"] for p in results[0].predictions) == pytest.approx(1.0, abs=1e-5)


def test_usage_errors(tmp_path, tiny_model, run_cli):
    folder, model = tiny_model
    image = _picture(tmp_path / "x.png", (1, 2, 3))
    with pytest.raises(UsageError, match="multiples of 8"):
        predict([image], model, img_size=30)
    for option in ({"batch_size": 0}, {"top_k": 0}):
        [(param, value)] = option.items()
        with pytest.raises(UsageError, match=f"^{param} must be at least 1, got 0$") as info:
            predict([image], model, **option)
        assert info.value.param == param  # the library names parameters; the CLI, flags
    assert_one_line_error(run_cli("predict", image, "--model", tmp_path / "nope"), 2, "nope")
    assert_one_line_error(
        run_cli("predict", image, "--model", folder, "--img-size", "30"), 2, "multiples of 8"
    )
    assert_one_line_error(
        run_cli("predict", image, "--model", folder, "--device", "tpu"), 2, "unknown --device"
    )
    assert_one_line_error(
        run_cli("predict", image, "--model", folder, "--precision", "int4"), 2, "precision"
    )


def test_bf16_autocast_runs(tmp_path, tiny_model):
    _, model = tiny_model
    image = _picture(tmp_path / "x.png", (1, 2, 3))
    [fp32] = predict([image], model, top_k=3)
    [bf16] = predict([image], model, top_k=3, precision="bf16", device="cpu")
    assert bf16.ok and bf16.predictions[0]["index"] == fp32.predictions[0]["index"]


def _imported_after(modules: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of ``candidates`` a fresh interpreter holds after importing ``modules``."""
    code = f"import sys, {modules}; print(' '.join(m for m in {candidates!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_predict_and_evaluate_do_not_import_the_datasets_library():
    """Start-up time: datasets loads only when a DATASET is read, never for predict."""
    modules = "gfnet_cli.commands.predict, gfnet_cli.commands.evaluate"
    assert _imported_after(modules, ("datasets",)) == []


def test_predict_and_evaluate_do_not_import_huggingface_hub():
    modules = "gfnet_cli.commands.predict, gfnet_cli.commands.evaluate"
    assert _imported_after(modules, ("huggingface_hub",)) == []
