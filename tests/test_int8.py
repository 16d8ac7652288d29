"""``gfnet export --quantize int8``: onnxruntime's dynamic quantization of the MLPs and head,
checked against fp32 PyTorch at export, refused when the check fails, run by predict/evaluate."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from gfnet_cli import GFNetConfig, create_model, evaluate, export_model, predict, save_model
from gfnet_cli.commands.export import INT8_MIN_AGREEMENT, ExportCheckError
from gfnet_cli.engine.onnx_model import OnnxModel
from tests.conftest import assert_one_line_error

CLASSES = ["cat", "dog", "bird", "fish"]
CONFIG = GFNetConfig(
    patch_size=8, embed_dim=64, depth=2, img_size=32, num_classes=4, class_names=CLASSES
)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(CONFIG).eval()
    with torch.no_grad():
        model.head.weight.mul_(50)  # logits well apart: top-1 means something
        model.head.bias.normal_()
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    folder = save_model(_model(), root / "tiny")
    fp32 = export_model(str(folder), root / "fp32.onnx", fft="matmul")
    int8 = export_model(str(folder), root / "int8.onnx", fft="matmul", quantize="int8")
    return folder, fp32, int8


def test_int8_file_is_checked_smaller_and_says_so_in_its_metadata(exported):
    _, fp32, int8 = exported
    figures = int8.quantization
    assert int8.quantize == "int8" and fp32.quantize is None and fp32.quantization == {}
    assert figures["top1_agreement"] >= INT8_MIN_AGREEMENT
    assert 0 < figures["max_logit_error"] < 0.1 * 50
    assert figures["int8_bytes"] == pytest.approx(int8.output.stat().st_size, rel=0.01)
    assert figures["fp32_bytes"] == pytest.approx(fp32.output.stat().st_size, rel=0.01)
    assert fp32.output.stat().st_size / int8.output.stat().st_size > 2.5
    props = {p.key: p.value for p in onnx.load(str(int8.output)).metadata_props}
    assert json.loads(props["quantization"]) == figures
    ops = {node.op_type for node in onnx.load(str(int8.output)).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    assert int8.to_dict()["quantization"] == figures
    assert not list(int8.output.parent.glob(".*partial*"))  # no staged file left behind


def test_predict_and_evaluate_run_the_int8_file(exported, data_dir, tmp_path):
    folder, _, int8 = exported
    image = data_dir / "preprocess_input.png"
    [from_folder] = predict([image], str(folder), top_k=1, device="cpu")
    [from_file] = predict([image], str(int8.output), top_k=1, device="cpu")
    assert from_file.predictions[0]["index"] == from_folder.predictions[0]["index"]
    assert OnnxModel(int8.output).config.num_classes == 4
    for name in CLASSES:
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "a.png").write_bytes(image.read_bytes())
    result = evaluate(str(int8.output), str(tmp_path / "data"), device="cpu", num_workers=0)
    assert result.num_samples == 4


def test_the_cli_prints_the_check(exported, tmp_path, run_cli):
    folder, _, _ = exported
    result = run_cli("export", folder, tmp_path / "m.onnx", "--fft", "matmul", "--quantize", "int8")
    assert result.exit_code == 0, result.stderr
    assert "int8:" in result.stdout and "top-1 = fp32 on" in result.stdout
    result = run_cli(
        "export", folder, tmp_path / "j.onnx", "--fft", "matmul", "--quantize", "int8", "--json"
    )
    assert result.json()["quantize"] == "int8"
    assert result.json()["quantization"]["check_images"] == 32


def test_a_model_int8_breaks_is_refused_and_nothing_is_written(tmp_path):
    model = _model(seed=1)
    with torch.no_grad():  # one huge activation channel: per-tensor int8 flattens the rest
        for block in model.blocks:
            block.norm2.weight[0] = 1e4
            block.mlp.fc1.weight[:, 0] = 0.0  # fp32 ignores it; int8's rounding does not
            block.mlp.fc2.weight.mul_(30)  # and the MLP, now rounded away, carries the logits
    with pytest.raises(ExportCheckError, match="int8 file fails its check against fp32"):
        export_model(model, tmp_path / "bad.onnx", fft="matmul", quantize="int8")
    assert list(tmp_path.iterdir()) == []


def test_bad_quantize_arguments_exit_2(exported, tmp_path, run_cli):
    folder, _, _ = exported
    result = run_cli("export", folder, tmp_path / "m.pt2", "--quantize", "int8")
    assert_one_line_error(result, 2, "quantize int8 writes ONNX files, not pt2")
    result = run_cli("export", folder, tmp_path / "m.onnx", "--quantize", "int4")
    assert_one_line_error(result, 2, "unknown --quantize 'int4'")
