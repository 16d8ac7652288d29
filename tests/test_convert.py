"""``gfnet convert``: the authors' checkpoints to MODEL folders, and every bad input."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re

import pytest
import torch
from safetensors.torch import load_file

from gfnet_cli import GFNetConfig, convert_checkpoint, create_model, load_model
from gfnet_cli.errors import CheckpointError
from gfnet_cli.hub.convert import extract_state_dict
from gfnet_cli.labels import read_label_file
from gfnet_cli.models import GFNetArchitecture
from tests.conftest import assert_one_line_error


@pytest.fixture(scope="module")
def expected():
    from tests.conftest import DATA

    return load_file(str(DATA / "tiny_expected.safetensors"))


@pytest.mark.parametrize("name", ["tiny-gfnet", "tiny-gfnet-h"])
def test_convert_without_arch_reloads_to_the_same_logits(
    run_cli, data_dir, tmp_path, expected, name
):
    out = tmp_path / name
    result = run_cli("convert", data_dir / f"{name}.pth", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "configuration_gfnet.py",  # and the rest transformers loads it with
        "image_processing_gfnet.py",
        "model.safetensors",
        "modeling_gfnet.py",
        "preprocessor_config.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["img_size"] == 64 and config["num_classes"] == 10
    assert config["kind"] == ("pyramid" if name.endswith("-h") else "flat")
    model = load_model(str(out))
    with torch.no_grad():
        logits = model(expected["input_64"])
    torch.testing.assert_close(logits, expected[f"{name}.logits_64"], atol=1e-5, rtol=0)
    # no pickle is ever written
    assert not any(p.suffix in (".pth", ".pt", ".bin", ".pkl") for p in out.iterdir())


def test_load_model_with_img_size_resizes(data_dir, tmp_path, expected):
    convert_checkpoint(data_dir / "tiny-gfnet.pth", tmp_path / "m")
    model = load_model(str(tmp_path / "m"), img_size=96)
    with torch.no_grad():
        logits = model(expected["input_96"])
    torch.testing.assert_close(
        logits, expected["tiny-gfnet.logits_96_after_resize"], atol=1e-5, rtol=0
    )


def _tiny_flat(num_classes: int, **kw) -> GFNetArchitecture:
    return GFNetArchitecture(
        GFNetConfig(patch_size=8, embed_dim=16, depth=2, img_size=32, num_classes=num_classes, **kw)
    )


def test_bare_state_dict_with_module_prefix_and_ema(tmp_path):
    model, ema = _tiny_flat(4), _tiny_flat(4)
    path = tmp_path / "ddp.pth"
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in model.state_dict().items()},
            "model_ema": ema.state_dict(),
            "epoch": 3,
            "args": argparse.Namespace(arch="gfnet", input_size=224),
        },
        path,
    )
    convert_checkpoint(path, tmp_path / "plain")
    convert_checkpoint(path, tmp_path / "ema", use_ema=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(str(tmp_path / "plain"))(x), model.eval()(x))
        assert torch.equal(load_model(str(tmp_path / "ema"))(x), ema.eval()(x))
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, bare)
    convert_checkpoint(bare, tmp_path / "bare")
    assert (tmp_path / "bare" / "model.safetensors").is_file()


def test_thousand_classes_get_imagenet_names(tmp_path):
    path = tmp_path / "in1k.pth"
    torch.save({"model": _tiny_flat(1000).state_dict()}, path)
    result = convert_checkpoint(path, tmp_path / "out")
    assert result.config.class_names[0] == "tench, Tinca tinca"
    assert len(result.config.class_names) == 1000


def test_labels_file_and_zoo_arch(tmp_path, data_dir, run_cli):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {i}" for i in range(10)))
    result = run_cli("convert", data_dir / "tiny-gfnet.pth", tmp_path / "out", "--labels", labels)
    assert result.exit_code == 0, result.stderr
    assert GFNetConfig.load(tmp_path / "out").class_names[3] == "digit 3"
    bad = run_cli(
        "convert", data_dir / "tiny-gfnet.pth", tmp_path / "out2", "--labels", "imagenet-1k"
    )
    assert_one_line_error(bad, contains="1000 class names")
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"\xff\xfe\x00bad", "labels.txt", "is not UTF-8 text"),
        (b'{"0": "cat", "5": "dog"}', "labels.json", "indices must be 0..N-1"),
        (b'{"zero": "cat"}', "labels.json", "keys must be class indices"),
        (b'[{"name": "cat"}, {"label": "dog"}]', "labels.json", 'entry 1 has no "name"'),
        (b"x" * 1001, "labels.txt", "a class name of 1,001 characters"),
        (b"a\n" * 100_001, "labels.txt", "100,001 class names"),
        (b" " * (4 * 1024 * 1024 + 1), "labels.txt", "a label file is at most"),
    ],
    ids=["not-utf8", "index-gap", "not-indices", "no-name", "long-name", "too-many", "huge"],
)
def test_a_bad_label_file_is_one_line_before_any_work(tmp_path, data_dir, run_cli, content,
                                                      name, message):  # fmt: skip
    labels = tmp_path / name
    labels.write_bytes(content)
    result = run_cli("convert", data_dir / "tiny-gfnet.pth", tmp_path / "out", "--labels", labels)
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "out").exists()


def test_an_id2label_label_file_with_a_bom_reads_in_index_order(tmp_path):
    labels = tmp_path / "id2label.json"
    labels.write_text('\ufeff{"1": "dog", "0": "cat", "2": "bird"}', encoding="utf-8")
    assert read_label_file(labels) == ["cat", "dog", "bird"]


def test_zoo_arch_takes_image_size_from_the_checkpoint(tmp_path):
    with torch.device("meta"):
        config = GFNetConfig(embed_dim=384, depth=12, img_size=384, num_classes=1000)
        model = GFNetArchitecture(config)
    state = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}
    path = tmp_path / "xs384.pth"
    torch.save({"model": state}, path)
    result = convert_checkpoint(path, tmp_path / "out", arch="gfnet-xs")
    assert result.config.img_size == 384 and result.config.architecture == "gfnet-xs"
    auto = convert_checkpoint(path, tmp_path / "auto")
    assert auto.config.architecture == "gfnet-xs"


def test_non_square_checkpoint(tmp_path):
    model = GFNetArchitecture(
        GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=[32, 48], num_classes=2)
    )
    path = tmp_path / "rect.pth"
    torch.save({"model": model.state_dict()}, path)
    result = convert_checkpoint(path, tmp_path / "out")
    assert result.config.img_size == [32, 48]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_inputs(tmp_path):
    cases = {}
    cases["missing"] = (tmp_path / "nope.pth", "no such file")
    folder = tmp_path / "folder"
    folder.mkdir()
    cases["folder"] = (folder, "not a file")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    cases["empty"] = (empty, "empty")
    garbage = tmp_path / "garbage.pth"
    # no known file's magic number at the start (0x08 would read as protobuf)
    garbage.write_bytes(b"\xa5" + random.Random(0).randbytes(999))
    cases["garbage"] = (garbage, "checkpoint: it holds 1000 bytes of unrecognized binary")
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    cases["text"] = (text, "it is a text file (starting 'these are not weights')")
    page = tmp_path / "page.pth"
    page.write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    cases["html"] = (page, "looks like an HTML or XML page")
    image = tmp_path / "photo.pth"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    cases["png"] = (image, "looks like a PNG image")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": _Exploit(marker)}, evil)
    cases["evil-zip"] = (evil, "refusing")
    legacy = tmp_path / "evil-legacy.pkl"
    legacy.write_bytes(pickle.dumps({"model": _Exploit(marker)}))
    cases["evil-legacy"] = (legacy, "refusing")
    state = _tiny_flat(4).state_dict()
    missing = dict(state)
    del missing["blocks.1.mlp.fc2.bias"]
    torch.save({"model": missing}, tmp_path / "missing-key.pth")
    cases["missing-key"] = (tmp_path / "missing-key.pth", "missing keys")
    extra = dict(state)
    extra["blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save({"model": extra}, tmp_path / "extra-key.pth")
    cases["unexpected-key"] = (tmp_path / "extra-key.pth", "unexpected keys")
    torch.save({"model": {"conv1.weight": torch.zeros(3)}}, tmp_path / "resnet.pth")
    cases["not-gfnet"] = (tmp_path / "resnet.pth", "not a GFNet")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    cases["list"] = (tmp_path / "list.pth", "not a state dict")
    truncated = tmp_path / "truncated.pth"
    torch.save({"model": state}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    cases["truncated"] = (truncated, "truncated or damaged zip archive")
    return cases, marker


def test_every_bad_input_exits_2_with_one_line_and_leaves_nothing(tmp_path, run_cli):
    cases, marker = _bad_inputs(tmp_path)
    for name, (source, message) in cases.items():
        out = tmp_path / f"out-{name}"
        result = run_cli("convert", source, out)
        assert_one_line_error(result, code=2, contains=message)
        assert not re.search(r"\(\d+\)", result.stderr), result.stderr  # no bare opcode numbers
        assert not out.exists(), name
    assert not marker.exists(), "unpickling ran code"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")], "staging left behind"


def test_arch_disagreement_and_unknown_arch(tmp_path, data_dir, run_cli):
    result = run_cli("convert", data_dir / "tiny-gfnet.pth", tmp_path / "o", "--arch", "gfnet-xs")
    assert_one_line_error(result, contains="does not match --arch gfnet-xs")
    result = run_cli("convert", data_dir / "tiny-gfnet.pth", tmp_path / "o", "--arch", "gfnet-xxl")
    assert_one_line_error(result, contains="unknown model")
    result = run_cli("convert", data_dir / "tiny-gfnet.pth", tmp_path / "o", "--use-ema")
    assert_one_line_error(result, contains="no 'model_ema'")
    assert not (tmp_path / "o").exists()


def test_existing_output_is_kept_unless_overwrite(tmp_path, data_dir, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = run_cli("convert", data_dir / "tiny-gfnet.pth", out)
    assert_one_line_error(result, contains="--overwrite")
    assert (out / "precious.txt").read_text() == "keep me"
    result = run_cli("convert", data_dir / "tiny-gfnet.pth", out, "--overwrite")
    assert result.exit_code == 0
    assert not (out / "precious.txt").exists() and (out / "model.safetensors").is_file()


def test_read_checkpoint_api_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError):
        convert_checkpoint(tmp_path / "missing.pth", tmp_path / "x")


def test_models_json_matches_reference(run_cli, data_dir):
    result = run_cli("models", "--json")
    assert result.exit_code == 0, result.stderr
    rows = result.json()
    zoo = json.loads((data_dir / "model_zoo.json").read_text())
    assert [r["name"] for r in rows] == [
        "gfnet-ti",
        "gfnet-xs",
        "gfnet-s",
        "gfnet-b",
        "gfnet-h-ti",
        "gfnet-h-s",
        "gfnet-h-b",
    ]
    for row in rows:
        assert set(row) == {
            "name",
            "kind",
            "params",
            "gflops",
            "img_size",
            "top1",
            "top5",
            "source",
        }
        facts = zoo[f"{row['name']}@224"]
        assert row["params"] == facts["params"]
        assert row["kind"] == facts["architecture"]["kind"]
        assert row["top1"] == facts["published"]["top1"]
        assert row["top5"] == facts["published"]["top5"]
        assert (
            abs(row["gflops"] - facts["published"]["gflops"]) / facts["published"]["gflops"] <= 0.04
        )
        assert row["img_size"] == 224
    table = run_cli("models")
    assert table.exit_code == 0 and "gfnet-h-b" in table.stdout


def test_version_and_module_entry_point(run_cli):
    import subprocess
    import sys

    assert run_cli("--version").stdout.startswith("gfnet ")
    proc = subprocess.run(
        [sys.executable, "-m", "gfnet_cli", "convert", "/nonexistent.pth", "/tmp/never"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no such file" in proc.stderr


def _reference_variants():
    from tests.conftest import DATA

    return json.loads((DATA / "official_state_dict_shapes.json").read_text())


@pytest.mark.parametrize("variant", list(_reference_variants()))
def test_architecture_inferred_from_every_authors_checkpoint_layout(variant):
    """The authors' full-size checkpoints (shapes only): kind, widths, depths, size, class count."""
    from gfnet_cli.hub.convert import apply_arch, infer_config
    from gfnet_cli.models.zoo import match_architecture

    shapes = _reference_variants()[variant]
    state = {f"module.{k}": torch.empty(v, device="meta") for k, v in shapes.items()}
    state, _ = extract_state_dict({"model": state, "epoch": 300})
    config = infer_config(state)
    name, size = variant.split("@")
    assert match_architecture(config) == name
    config = apply_arch(config, name)
    assert config.img_size == int(size) and config.num_classes == 1000
    with torch.device("meta"):
        expected = create_model(name, img_size=int(size))
    assert config.widths == expected.config.widths
    assert config.depths == expected.config.depths
    assert config.drop_path_rate == expected.config.drop_path_rate
    assert config.init_values == expected.config.init_values
