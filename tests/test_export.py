"""``gfnet export`` and exported files used as MODELs.

First the matmul form of the global filter is proved equal to the FFT form in PyTorch itself
(odd, even and non-square grids, pyramid stages, resized filters); then tiny flat and pyramid
models are exported in both forms and run in onnxruntime and ``torch.export.load`` against
PyTorch; then the exported files are used by ``predict`` and ``evaluate``. The seven
full-size architectures are checked by ``benchmarks/bench_export.py --verify`` (docs/export.md).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

from gfnet_cli import GFNetConfig, create_model, evaluate, export_model, predict, save_model
from gfnet_cli.commands.export import ExportCheckError
from gfnet_cli.engine.onnx_model import (
    METADATA_KEYS,
    PT2_EXTRA_FILE,
    OnnxModel,
    config_from_metadata,
    decode_metadata,
)
from gfnet_cli.errors import GFNetError, UsageError
from gfnet_cli.models import GFNetArchitecture, layers
from gfnet_cli.models.layers import GlobalFilter, dft_bases, filter_form, fused_inference
from tests.conftest import assert_one_line_error

CLASSES = ["cat", "dog", "bird", "fish", "frog", "horse"]
FLAT = GFNetConfig(
    patch_size=8, embed_dim=32, depth=2, img_size=32, num_classes=6, class_names=CLASSES
)
PYRAMID = GFNetConfig(
    kind="pyramid",
    patch_size=4,
    embed_dim=[16, 24, 32, 48],
    depth=[1, 1, 2, 1],
    img_size=64,
    num_classes=6,
    class_names=CLASSES,
    init_values=1e-2,
)


def _model(config: GFNetConfig, seed: int = 0) -> GFNetArchitecture:
    torch.manual_seed(seed)
    model = create_model(config).eval()
    with torch.no_grad():  # filters and a head far from their small init: a harder test
        for module in model.modules():
            if isinstance(module, GlobalFilter):
                module.complex_weight.normal_()
        model.head.weight.mul_(50)
    return model


def _fft_filter(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    rows, cols = x.shape[1:3]
    spectrum = torch.fft.rfft2(x, dim=(1, 2), norm="ortho") * torch.view_as_complex(weight)
    return torch.fft.irfft2(spectrum, s=(rows, cols), dim=(1, 2), norm="ortho")


# ------------------------------------------------------------------ the matmul form in PyTorch
GRIDS = [(14, 14), (7, 7), (8, 5), (5, 8), (1, 1), (2, 3), (3, 2), (12, 20), (9, 4)]


@pytest.mark.parametrize("grid", GRIDS, ids=[f"{r}x{c}" for r, c in GRIDS])
def test_matmul_form_is_the_fft_form_up_to_rounding(grid):
    gfilter = GlobalFilter(24, grid).eval()
    with torch.no_grad():
        gfilter.complex_weight.normal_()  # imaginary DC/Nyquist parts too: irfft drops them
        x = torch.randn(3, *grid, 24)
        with filter_form("matmul"):
            matmul = gfilter(x)
        with filter_form("fft"):
            fft = gfilter(x)
        exact = _fft_filter(x.double(), gfilter.complex_weight.double())
    torch.testing.assert_close(matmul, fft, atol=1e-5, rtol=0)
    # as close to the float64 truth as the FFT itself is
    fft_error = (fft.double() - exact).abs().max().item()
    matmul_error = (matmul.double() - exact).abs().max().item()
    assert matmul_error <= 4 * fft_error + 1e-7, (matmul_error, fft_error)


@pytest.mark.parametrize("grid", [(6, 6), (5, 7), (4, 9)])
def test_dft_bases_invert_each_other(grid):
    # an all-pass filter (1 + 0j everywhere) must give back its input
    rows, cols = grid
    weight = torch.zeros(rows, cols // 2 + 1, 8, 2)
    weight[..., 0] = 1.0
    x = torch.randn(2, rows, cols, 8)
    out = layers.filter_by_matmul(x, weight, dft_bases(grid))
    torch.testing.assert_close(out, x, atol=2e-6, rtol=0)
    bases = dft_bases(grid)
    assert bases.rows_forward.shape == (2 * rows, rows)
    half = cols // 2 + 1
    assert bases.cols_forward.shape == (2 * half, 2 * cols)
    assert bases.cols_inverse.shape == (2 * cols, 2 * half)
    # the sine terms of DC (and Nyquist) are exact zeros, not 1e-16
    real_bins = [0] + ([half - 1] if cols % 2 == 0 else [])
    sines = torch.cat(
        (
            bases.cols_inverse[:cols, [half + k for k in real_bins]],
            bases.cols_inverse[cols:, real_bins],
        )
    )
    assert (sines == 0).all()
    assert bases.rows_inverse.shape == (rows, 2 * rows)
    assert bases.rows_forward.dtype == torch.float32


@pytest.mark.parametrize("config", [FLAT, PYRAMID], ids=["flat", "pyramid"])
@pytest.mark.parametrize("size", [None, (64, 96), (96, 64)], ids=["native", "wide", "tall"])
def test_whole_models_agree_in_both_forms(config, size):
    # pyramid stages (grids 16, 8, 4, 2 and their non-square forms) and, off the native size,
    # filters resized at run time
    model = _model(config)
    height, width = size or config.image_size
    images = torch.randn(2, 3, height, width)
    with torch.inference_mode(), fused_inference(False):
        with filter_form("fft"):
            fft = model(images)
        with filter_form("matmul"):
            matmul = model(images)
    torch.testing.assert_close(matmul, fft, atol=1e-4, rtol=0)
    assert torch.equal(matmul.argmax(-1), fft.argmax(-1))


def test_matmul_form_keeps_the_transform_in_fp32_under_autocast_without_bf16_dft():
    gfilter = GlobalFilter(16, (6, 6)).eval()
    x = torch.randn(2, 6, 6, 16).to(torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with filter_form("matmul"), layers.bf16_dft(False):
            matmul = gfilter(x)
        with fused_inference(False), filter_form("fft"):
            fft = gfilter(x)
    assert matmul.dtype == torch.bfloat16
    torch.testing.assert_close(matmul.float(), fft.float(), atol=0, rtol=0)


def test_matmul_form_trains():
    model = _model(FLAT).train()
    with filter_form("matmul"):
        model(torch.randn(2, 3, 48, 48)).sum().backward()
    assert model.blocks[0].filter.complex_weight.grad is not None


def test_unknown_filter_form_is_refused():
    with pytest.raises(ValueError, match="unknown filter form"):
        with filter_form("winograd"):
            pass


def test_dft_tables_built_inside_a_trace_are_not_cached():
    layers._DFT_BASES.pop((5, 3, "cpu"), None)
    gfilter = GlobalFilter(8, (5, 3)).eval().requires_grad_(False)
    with filter_form("matmul"):
        program = torch.export.export(gfilter, (torch.randn(2, 5, 3, 8),))
    assert (5, 3, "cpu") not in layers._DFT_BASES  # a traced table would be a fake tensor
    x = torch.randn(2, 5, 3, 8)
    torch.testing.assert_close(program.module()(x), gfilter(x), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ ONNX files
CASES = {
    "flat-native-square": (FLAT, "native", 32),
    "flat-matmul-wide": (FLAT, "matmul", (32, 48)),
    "pyramid-native-tall": (PYRAMID, "native", (96, 64)),
    "pyramid-matmul-square": (PYRAMID, "matmul", None),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each case exported once: (model, path, result)."""
    folder = tmp_path_factory.mktemp("exported")
    files = {}
    for name, (config, fft, size) in CASES.items():
        model = _model(config)
        result = export_model(model, folder / f"{name}.onnx", fft=fft, img_size=size)
        files[name] = (model, folder / f"{name}.onnx", result)
    return files


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_files_match_pytorch(exported, name):
    model, path, result = exported[name]
    config, fft, size = CASES[name]
    onnx.checker.check_model(str(path), full_check=True)
    assert result.fft == fft and result.format == "onnx" and result.output == path
    assert result.batch_size is None and result.max_abs_diff < 1e-4
    assert result.img_size == (
        size if isinstance(size, tuple) else config.image_size if size is None else (size, size)
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # one dynamic batch dimension
        images = torch.randn(batch, 3, *result.img_size)
        with torch.inference_mode():
            expected = model(images)
        logits = session.run(None, {"pixel_values": images.numpy()})[0]
        assert logits.shape == (batch, config.num_classes)
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)
        assert (logits.argmax(-1) == expected.argmax(-1).numpy()).all()


@pytest.mark.parametrize("name", list(CASES))
def test_the_two_forms_are_different_graphs(exported, name):
    _, path, result = exported[name]
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    if result.fft == "native":
        assert "DFT" in ops
    else:
        assert "DFT" not in ops and "MatMul" in ops


def test_onnx_metadata_describes_preprocessing_and_labels(exported):
    model, path, result = exported["flat-matmul-wide"]
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert list(props) == list(METADATA_KEYS)
    meta = decode_metadata(props)
    assert meta["class_names"] == CLASSES and meta["num_classes"] == 6
    assert meta["input_size"] == [3, 32, 48] and meta["batch_size"] == "dynamic"
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["crop_pct"] == 0.875 and meta["interpolation"] == "bicubic"
    assert meta["resize_size"] == 36  # int(32 / 0.875): the shorter side before the crop
    assert meta["fft"] == "matmul" and meta["input_name"] == "pixel_values"
    config = config_from_metadata(props, str(path))
    assert config == model.config.replace(img_size=[32, 48])
    assert result.metadata == meta


def test_fixed_batch_size_and_opset(tmp_path):
    model = _model(FLAT)
    result = export_model(model, tmp_path / "b3.onnx", batch_size=3, opset=18, fft="matmul")
    assert result.batch_size == 3 and result.checked_batch_sizes == (3,)
    assert result.opset == 18
    versions = {o.domain: o.version for o in onnx.load(str(tmp_path / "b3.onnx")).opset_import}
    assert versions[""] == 18
    session = onnxruntime.InferenceSession(str(tmp_path / "b3.onnx"))
    assert session.get_inputs()[0].shape == [3, 3, 32, 32]
    # the runner feeds a fixed-batch file in chunks, padding the last one
    runner = OnnxModel(tmp_path / "b3.onnx")
    assert runner.batch_size == 3 and runner.device == "cpu"
    images = torch.randn(7, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(runner(images), model(images), atol=1e-4, rtol=0)


# ------------------------------------------------------------------ auto and broken runtimes
class _WrongDFTSession(onnxruntime.InferenceSession):
    """onnxruntime as a runtime with a wrong DFT kernel would behave: files with DFT ops
    load but give wrong logits (or, with ``refuse``, do not load)."""

    refuse = False

    def __init__(self, path, *args, **kwargs):
        self.has_dft = any(n.op_type == "DFT" for n in onnx.load(str(path)).graph.node)
        if self.has_dft and self.refuse:
            raise RuntimeError(
                "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation "
                "for DFT(20) node with name 'node_DFT_1'"
            )
        super().__init__(path, *args, **kwargs)

    def run(self, *args, **kwargs):
        outputs = super().run(*args, **kwargs)
        return [out + 0.5 for out in outputs] if self.has_dft else outputs


@pytest.mark.parametrize("refuse", [False, True], ids=["wrong", "missing"])
def test_auto_falls_back_to_matmul_where_the_runtime_fails(tmp_path, monkeypatch, refuse):
    monkeypatch.setattr(_WrongDFTSession, "refuse", refuse)
    monkeypatch.setattr(onnxruntime, "InferenceSession", _WrongDFTSession)
    result = export_model(_model(FLAT), tmp_path / "a.onnx")
    assert result.fft == "matmul" and result.max_abs_diff < 1e-4
    assert ("cannot run" if refuse else "differ") in result.native_rejected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]  # no partial files


class _SlowSession(onnxruntime.InferenceSession):
    """onnxruntime where the files with DFT ops (or, with ``slow_dft`` off, those without)
    run slowly: what ``auto`` must notice."""

    slow_dft = True

    def __init__(self, path, *args, **kwargs):
        has_dft = any(n.op_type == "DFT" for n in onnx.load(str(path)).graph.node)
        self.slow = has_dft == self.slow_dft
        super().__init__(path, *args, **kwargs)

    def run(self, *args, **kwargs):
        if self.slow:
            time.sleep(0.05)
        return super().run(*args, **kwargs)


@pytest.mark.parametrize("slow_dft", [True, False], ids=["slow-dft", "slow-matmul"])
def test_auto_keeps_the_faster_correct_onnx_form(tmp_path, monkeypatch, slow_dft):
    monkeypatch.setattr(_SlowSession, "slow_dft", slow_dft)
    monkeypatch.setattr(onnxruntime, "InferenceSession", _SlowSession)
    result = export_model(_model(FLAT), tmp_path / "a.onnx")
    faster = "matmul" if slow_dft else "native"
    assert result.fft == faster and set(result.timings_ms) == {"native", "matmul"}
    slower = "native" if slow_dft else "matmul"
    assert result.timings_ms[slower] > result.timings_ms[faster] + 40
    assert ("ms per batch" in (result.native_rejected or "")) == slow_dft
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]  # the other form is gone
    session = onnxruntime.InferenceSession(str(tmp_path / "a.onnx"))
    assert session.get_modelmeta().custom_metadata_map["fft"] == faster


def test_native_that_the_runtime_gets_wrong_fails_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(onnxruntime, "InferenceSession", _WrongDFTSession)
    with pytest.raises(ExportCheckError, match="differ from PyTorch's by 0.5"):
        export_model(_model(FLAT), tmp_path / "n.onnx", fft="native")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ torch.export (.pt2)
@pytest.mark.parametrize(
    ("config", "fft", "size"),
    [(PYRAMID, "native", (64, 96)), (FLAT, "matmul", (40, 32))],
    ids=["pyramid-native", "flat-matmul"],
)
def test_pt2_reloads_and_matches(tmp_path, config, fft, size):
    model = _model(config)
    result = export_model(model, tmp_path / "m.pt2", fft=fft, img_size=size)
    assert result.format == "pt2" and result.fft == fft and result.opset is None
    extra = {PT2_EXTRA_FILE: ""}
    program = torch.export.load(str(tmp_path / "m.pt2"), extra_files=extra)
    meta = json.loads(extra[PT2_EXTRA_FILE])
    assert meta["class_names"] == CLASSES and meta["input_size"] == [3, *size]
    assert meta["fft"] == fft and config_from_metadata(meta, "m.pt2").image_size == size
    targets = {str(node.target) for node in program.graph.nodes}
    assert any("fft" in target for target in targets) == (fft == "native")
    module = program.module()
    for batch in (1, 5):
        images = torch.randn(batch, 3, *size)
        with torch.inference_mode():
            torch.testing.assert_close(module(images), model(images), atol=1e-4, rtol=0)


# ------------------------------------------------------------------ exported files as MODEL
@pytest.fixture(scope="module")
def folder_and_file(tmp_path_factory):
    """A tiny MODEL folder at 64 px and its ONNX export."""
    root = tmp_path_factory.mktemp("as_model")
    folder = save_model(_model(PYRAMID, seed=3), root / "tiny")
    result = export_model(str(folder), root / "tiny.onnx")
    # both forms are correct in onnxruntime: `auto` kept the faster one and says so
    assert set(result.timings_ms) == {"native", "matmul"}
    assert result.fft == min(result.timings_ms, key=result.timings_ms.get)
    assert (result.native_rejected is None) == (result.fft == "native")
    return folder, root / "tiny.onnx"


def test_predict_on_a_real_image_gives_the_folders_top5(folder_and_file, data_dir, run_cli):
    folder, onnx_file = folder_and_file
    image = data_dir / "preprocess_input.png"
    [from_folder] = predict([image], str(folder), top_k=5, device="cpu")
    [from_file] = predict([image], str(onnx_file), top_k=5, device="cpu")
    assert [p["index"] for p in from_file.predictions] == [
        p["index"] for p in from_folder.predictions
    ]
    assert [p["label"] for p in from_file.predictions] == [
        p["label"] for p in from_folder.predictions
    ]
    for a, b in zip(from_file.predictions, from_folder.predictions, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    result = run_cli("predict", image, "--model", onnx_file, "--json")
    assert result.exit_code == 0, result.stderr
    shown = result.json()[0]["predictions"]
    assert [p["index"] for p in shown] == [p["index"] for p in from_file.predictions]


def _png(seed: int) -> bytes:
    pixels = torch.randint(0, 256, (70, 90, 3), generator=torch.Generator().manual_seed(seed))
    buffer = io.BytesIO()
    Image.fromarray(pixels.to(torch.uint8).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def test_evaluate_an_onnx_file_like_its_folder(folder_and_file, tmp_path, run_cli):
    folder, onnx_file = folder_and_file
    for index, name in enumerate(CLASSES):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "data" / name / f"{i}.png").write_bytes(_png(10 * index + i))
    kwargs = {"device": "cpu", "num_workers": 0, "batch_size": 5}
    expected = evaluate(str(folder), str(tmp_path / "data"), **kwargs)
    result = evaluate(str(onnx_file), str(tmp_path / "data"), **kwargs)
    assert result.num_samples == expected.num_samples == 12
    assert result.top1 == expected.top1 and result.top5 == expected.top5
    assert result.loss == pytest.approx(expected.loss, abs=1e-5)
    assert result.label_mapping == "by_name"  # the folder lists classes alphabetically
    cli = run_cli("evaluate", "-m", onnx_file, "-d", tmp_path / "data", "--json")
    assert cli.exit_code == 0, cli.stderr
    assert cli.json()["top1"] == result.top1


def test_an_onnx_model_refuses_what_it_cannot_do(folder_and_file, data_dir, run_cli):
    _, onnx_file = folder_and_file
    image = data_dir / "preprocess_input.png"
    assert_one_line_error(
        run_cli("predict", image, "--model", onnx_file, "--img-size", "96"),
        2,
        "was exported for 64x64 inputs, not 96x96: export the MODEL again with --img-size 96x96",
    )
    assert_one_line_error(
        run_cli("predict", image, "--model", onnx_file, "--precision", "bf16"),
        2,
        "runs in fp32",
    )
    assert_one_line_error(run_cli("predict", image, "--model", "nowhere.onnx"), 2, "no such")
    # commands that need the network itself (embeddings, gradients, filters) say so
    result = run_cli(
        "embed", image, "-m", onnx_file, "--output", onnx_file.with_suffix(".safetensors")
    )
    assert_one_line_error(result, 2, "is an exported ONNX file: this needs the PyTorch network")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.onnx's own deprecation notice
def test_an_onnx_file_not_written_by_gfnet_is_refused(tmp_path, data_dir, run_cli):
    path = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2).eval(), (torch.randn(1, 4),), str(path), dynamo=True)
    with pytest.raises(UsageError, match="carries no gfnet metadata"):
        OnnxModel(path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    result = run_cli("predict", data_dir / "preprocess_input.png", "--model", garbage)
    assert_one_line_error(result, 2, "cannot be loaded by onnxruntime")


def test_the_documented_onnxruntime_snippet_predicts_like_gfnet(
    folder_and_file, data_dir, tmp_path
):
    """docs/export.md's standalone snippet (onnxruntime, numpy, Pillow) gives gfnet's top-5."""
    text = (Path(__file__).parents[1] / "docs" / "export.md").read_text(encoding="utf-8")
    snippet = text.split("<!-- snippet: run-onnx -->")[1].split("```python")[1].split("```")[0]
    _, onnx_file = folder_and_file
    shutil.copy(onnx_file, tmp_path / "gfnet-xs.onnx")
    shutil.copy(data_dir / "preprocess_input.png", tmp_path / "cat.jpg")
    run = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    [expected] = predict([tmp_path / "cat.jpg"], str(onnx_file), top_k=5)
    printed = [line.rsplit(" ", 1) for line in run.stdout.strip().splitlines()]
    assert [label.strip() for label, _ in printed] == [p["label"] for p in expected.predictions]
    for (_, score), p in zip(printed, expected.predictions, strict=True):
        assert float(score) == pytest.approx(p["score"], abs=1e-3)


def test_predicting_with_a_folder_loads_no_onnx_library(tmp_path):
    """onnxruntime and onnx load only for an .onnx MODEL (or an export), never otherwise."""
    from tests.test_architecture import loaded_after

    code = (
        "from PIL import Image\n"
        "from gfnet_cli.models import GFNetArchitecture, GFNetConfig\n"
        "from gfnet_cli.commands.predict import predict\n"
        "from gfnet_cli.hub.serialization import save_model\n"
        "config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3)\n"
        f"save_model(GFNetArchitecture(config), {str(tmp_path)!r})\n"
        f"predict([Image.new('RGB', (40, 30))], {str(tmp_path)!r}, device='cpu')"
    )
    assert loaded_after(code, ("onnxruntime", "onnx", "onnxscript")) == []


# ------------------------------------------------------------------ the command
def test_export_json_is_the_documented_document(folder_and_file, tmp_path, run_cli):
    folder, _ = folder_and_file
    out = tmp_path / "m.onnx"
    result = run_cli("export", folder, out, "--img-size", "64x96", "--fft", "matmul", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert set(document) >= {"output", "format", "fft", "img_size", "max_abs_diff"}
    assert document["output"] == str(out) and document["format"] == "onnx"
    assert document["fft"] == "matmul" and document["img_size"] == [64, 96]
    assert 0 <= document["max_abs_diff"] < 1e-4 and document["batch_size"] is None
    assert OnnxModel(out).image_size == (64, 96)


def test_export_table_names_the_file_last(tmp_path, run_cli):
    folder = save_model(_model(FLAT), tmp_path / "flat")
    out = tmp_path / "sub" / "m.onnx"  # missing folders are created
    result = run_cli("export", folder, out, "--batch-size", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert "[2, 3, 32, 32]" in result.stdout and "native" in result.stdout
    assert onnxruntime.InferenceSession(str(out)).get_inputs()[0].shape[0] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--img-size", "70"), "multiples of 32"),
        (("--img-size", "64x"), "--img-size must be N or HxW"),
        (("--format", "tflite"), "unknown --format 'tflite'"),
        (("--format", "pt2"), "--format pt2 does not suit"),
        (("--fft", "winograd"), "unknown --fft"),
        (("--batch-size", "2", "--dynamic-batch"), "--batch-size fixes the batch dimension"),
        (("--batch-size", "0"), "--batch-size must be at least 1"),
        (("--opset", "12"), "--opset must be from 18"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(folder_and_file, tmp_path, run_cli, args, message):
    folder, _ = folder_and_file
    result = run_cli("export", folder, tmp_path / "out" / "m.onnx", *args)
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_bad_models_and_outputs_exit_2(folder_and_file, tmp_path, run_cli):
    folder, onnx_file = folder_and_file
    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    assert_one_line_error(
        run_cli("export", not_a_model, tmp_path / "m.onnx"), 2, "not a MODEL folder"
    )
    assert_one_line_error(
        run_cli("export", onnx_file, tmp_path / "m.onnx"), 2, "is an exported file already"
    )
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"keep me")
    assert_one_line_error(
        run_cli("export", folder, existing),
        2,
        "already exists: choose another name or pass --overwrite",
    )
    assert existing.read_bytes() == b"keep me"
    assert_one_line_error(run_cli("export", folder, tmp_path), 2, "is a folder")
    no_format = run_cli("export", folder, tmp_path / "m.txt")
    assert_one_line_error(no_format, 2, "end it in .onnx or .pt2, or pass --format")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.onnx", "photos"]


def test_a_failed_export_leaves_nothing_and_exits_1(
    folder_and_file, tmp_path, monkeypatch, run_cli
):
    folder, _ = folder_and_file
    monkeypatch.setattr(onnxruntime, "InferenceSession", _WrongDFTSession)
    result = run_cli("export", folder, tmp_path / "new" / "m.onnx", "--fft", "native")
    assert_one_line_error(result, 1, "differ from PyTorch's")
    assert list(tmp_path.iterdir()) == []  # not even the folder made for it


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_without_the_extra_export_exits_2_with_the_pip_command(
    folder_and_file, tmp_path, monkeypatch, run_cli, missing
):
    folder, onnx_file = folder_and_file
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ImportError
    result = run_cli("export", folder, tmp_path / "m.onnx")
    assert_one_line_error(result, 2, "pip install '.[export]' in the gfnet-cli clone")
    assert list(tmp_path.iterdir()) == []
    if missing == "onnxruntime":
        result = run_cli("predict", "x.png", "--model", onnx_file)
        assert_one_line_error(result, 2, "pip install '.[export]' in the gfnet-cli clone")


def test_pt2_needs_no_extra(folder_and_file, tmp_path, monkeypatch):
    folder, _ = folder_and_file
    for name in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)
    result = export_model(str(folder), tmp_path / "m.pt2")
    assert result.format == "pt2" and result.fft == "native"


def test_library_errors_name_parameters(folder_and_file, tmp_path):
    folder, _ = folder_and_file
    with pytest.raises(UsageError) as caught:
        export_model(str(folder), tmp_path / "m.onnx", format="tflite")
    assert caught.value.param == "format"
    with pytest.raises(UsageError) as caught:
        export_model(str(folder), tmp_path / "m.pt2", opset=20)
    assert caught.value.param == "opset"
    with pytest.raises(GFNetError) as caught:
        export_model(str(folder), tmp_path / "m.onnx", img_size=33)
    assert caught.value.param == "img_size" and caught.value.exit_code == 2


def test_a_given_model_is_left_as_it_was(tmp_path):
    model = _model(FLAT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    export_model(
        model,
        tmp_path / "m.onnx",
        img_size=48,
        fft="matmul",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert model.config.img_size == 32 and model.training is False
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    assert calls == [(1, 3), (2, 3), (3, 3)]  # loaded, written, checked
