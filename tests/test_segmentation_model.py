"""The segmentation model: Semantic FPN as mmsegmentation builds it, on flat and pyramid GFNets.

Expected parameter counts and multiply-accumulates are derived here from the layer formulas of
mmsegmentation's FPN neck and FPNHead (conv weights k*k*c_in*c_out, biases only where there is
no norm, two affine values per BatchNorm channel), never read from the code under test.
"""

from __future__ import annotations

import json
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gfnet_cli import create_model as create_architecture
from gfnet_cli.commands.profile import ProfileOptions, profile
from gfnet_cli.data.masks import (
    IGNORE_INDEX,
    MaskReadError,
    colorize,
    mask_image,
    open_mask,
    palette,
    reduce_labels,
)
from gfnet_cli.errors import ConfigError, UsageError
from gfnet_cli.hub.resolve import create_model, load_model
from gfnet_cli.hub.serialization import check_model_folder, save_model
from gfnet_cli.labels import ade20k_class_names
from gfnet_cli.models import (
    GFNetArchitecture,
    GFNetConfig,
    GFNetForSegmentation,
    SegmentationConfig,
)
from gfnet_cli.models.flops import config_gflops, count_flops
from gfnet_cli.models.layers import resize_filter
from gfnet_cli.models.segmentation import BatchNorm2d, sync_batchnorm
from tests.conftest import assert_one_line_error

PYRAMID = GFNetConfig(
    kind="pyramid",
    patch_size=4,
    embed_dim=[8, 16, 16, 24],
    depth=[1, 1, 2, 1],
    img_size=64,
    num_classes=10,
    init_values=1e-6,
)
FLAT = GFNetConfig(patch_size=16, embed_dim=16, depth=2, img_size=64, num_classes=10)
NECK, HEAD, CLASSES = 12, 8, 5
SETTINGS = SegmentationConfig(neck_channels=NECK, head_channels=HEAD)


def _segmenter(base: GFNetConfig, **changes) -> GFNetForSegmentation:
    changes = {"segmentation": SETTINGS, "num_classes": CLASSES, **changes}
    return create_architecture(base.replace(task="segmentation", **changes))


def _backbone_maps(base: GFNetConfig) -> list[tuple[int, int]]:
    """(channels, stride) of the four maps the neck takes, from the architecture's definition."""
    if base.kind == "pyramid":
        return [(width, base.patch_size * 2**i) for i, width in enumerate(base.widths)]
    width, patch = base.widths[0], base.patch_size
    return [(width, patch // 4), (width, patch // 2), (width, patch), (width, patch * 2)]


def _head_lengths(strides: list[int]) -> list[int]:
    return [max(1, int(math.log2(s) - math.log2(strides[0]))) for s in strides]


def _expected_head_params(in_channels: list[int], strides: list[int]) -> tuple[int, int]:
    """(FPN neck, FPNHead) parameters of mmsegmentation's modules at these widths."""
    neck = sum(c * NECK + NECK for c in in_channels)  # 1x1 laterals with bias
    neck += len(in_channels) * (9 * NECK * NECK + NECK)  # 3x3 fpn convs with bias
    head = 0
    for length in _head_lengths(strides):
        head += 9 * NECK * HEAD + 2 * HEAD  # first conv (no bias) + BN affine
        head += (length - 1) * (9 * HEAD * HEAD + 2 * HEAD)
    head += HEAD * CLASSES + CLASSES  # conv_seg
    return neck, head


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- architecture
@pytest.mark.parametrize("base", [PYRAMID, FLAT], ids=["pyramid", "flat"])
def test_head_parameters_equal_mmsegmentation_fpn_and_fpnhead(base):
    model = _segmenter(base)
    maps = _backbone_maps(base)
    neck, head = _expected_head_params([c for c, _ in maps], [s for _, s in maps])
    assert _params(model.neck) == neck
    assert _params(model.decode_head) == head
    backbone = _params(GFNetArchitecture(base.replace(num_classes=0)))
    pyramid = 0
    if base.kind == "flat":  # ConvT(C,C,2)+BN+ConvT for s/4, ConvT for s/2 (all with bias)
        width = base.widths[0]
        pyramid = 3 * (4 * width * width + width) + 2 * width
    assert model.num_params == backbone + pyramid + neck + head


@pytest.mark.parametrize("base", [PYRAMID, FLAT], ids=["pyramid", "flat"])
def test_shapes_at_every_level_and_logits_at_the_input_size(base):
    model = _segmenter(base).eval()
    height, width = 64, 96
    x = torch.randn(2, 3, height, width)
    features = model.forward_features(x)
    maps = _backbone_maps(base)
    assert [tuple(f.shape) for f in features] == [(2, c, height // s, width // s) for c, s in maps]
    levels = model.neck(features)
    assert [tuple(f.shape) for f in levels] == [(2, NECK, height // s, width // s) for _, s in maps]
    finest = maps[0][1]
    assert model.decode_head(levels).shape == (2, CLASSES, height // finest, width // finest)
    assert model(x).shape == (2, CLASSES, height, width)


def test_head_stages_and_parameter_names_are_mmsegmentations():
    model = _segmenter(PYRAMID)
    heads = model.decode_head.scale_heads
    convs = [sum(isinstance(m, nn.Conv2d) for m in head.modules()) for head in heads]
    upsamples = [sum(isinstance(m, nn.Upsample) for m in head.modules()) for head in heads]
    assert convs == [1, 1, 2, 3] and upsamples == [0, 1, 2, 3]
    for up in (m for m in heads.modules() if isinstance(m, nn.Upsample)):
        assert (up.scale_factor, up.mode, up.align_corners) == (2.0, "bilinear", False)
    assert isinstance(model.decode_head.dropout, nn.Dropout2d)
    assert model.decode_head.dropout.p == 0.1
    keys = set(model.state_dict())
    for key in (
        "neck.lateral_convs.0.conv.weight",
        "neck.lateral_convs.3.conv.bias",
        "neck.fpn_convs.2.conv.weight",
        "decode_head.scale_heads.0.0.conv.weight",
        "decode_head.scale_heads.3.4.bn.running_var",
        "decode_head.conv_seg.weight",
        "decode_head.conv_seg.bias",
        "backbone.blocks.0.0.filter.complex_weight",
    ):
        assert key in keys, key
    assert "decode_head.scale_heads.0.0.conv.bias" not in keys  # conv before a norm: no bias


@pytest.mark.parametrize("base", [PYRAMID, FLAT], ids=["pyramid", "flat"])
def test_any_input_size_is_padded_and_cropped_back(base):
    model = _segmenter(base).eval()
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        logits = model(x)
        padded = model(F.pad(x, (0, 96 - 70, 0, 64 - 45)))
    assert logits.shape == (1, CLASSES, 45, 70)
    torch.testing.assert_close(logits, padded[..., :45, :70])


@pytest.mark.parametrize("base", [PYRAMID, FLAT], ids=["pyramid", "flat"])
def test_every_parameter_gets_a_gradient(base):
    model = _segmenter(base).train()
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert "backbone.pos_embed" in model.no_weight_decay()


def test_one_image_with_a_one_pixel_coarsest_map_trains():
    """A 32-pixel crop leaves a 1x1 map at stride 32: a batch of one image has one value per
    channel there, which torch's BatchNorm refuses; ours normalizes it with the running
    statistics, leaves them alone, and is torch's BatchNorm for every other batch."""
    model = _segmenter(PYRAMID).train()
    model(torch.randn(1, 3, 32, 32)).logsumexp(1).mean().backward()
    norm = BatchNorm2d(4).train()
    reference = nn.BatchNorm2d(4).train()
    norm.running_mean.fill_(0.5), reference.running_mean.fill_(0.5)
    single = torch.randn(1, 4, 1, 1)
    expected = (single - 0.5) / torch.sqrt(torch.tensor(1.0 + norm.eps))
    torch.testing.assert_close(norm(single), expected)
    assert torch.equal(norm.running_mean, torch.full((4,), 0.5)) and norm.num_batches_tracked == 0
    batch = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(norm(batch), reference(batch))
    torch.testing.assert_close(norm.running_mean, reference.running_mean)


def test_initialization_is_mmsegmentations():
    torch.manual_seed(0)
    model = _segmenter(PYRAMID.replace(embed_dim=[32, 32, 32, 32]), segmentation=None)
    conv_seg = model.decode_head.conv_seg
    assert conv_seg.bias.abs().max() == 0 and 0.005 < conv_seg.weight.std() < 0.015
    lateral = model.neck.lateral_convs[0].conv
    bound = math.sqrt(6 / (lateral.in_channels + lateral.out_channels))  # Xavier uniform
    assert lateral.weight.abs().max() <= bound and lateral.bias.abs().max() == 0
    bn = model.decode_head.scale_heads[0][0].bn
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))


# --------------------------------------------------------------------------- config
def test_config_round_trips_and_old_configs_load_as_classification(tmp_path):
    config = PYRAMID.replace(task="segmentation", num_classes=3, class_names=["a", "b", "c"])
    assert config.segmentation == SegmentationConfig()  # PVT's head by default
    data = json.loads(json.dumps(config.to_dict()))
    assert data["task"] == "segmentation"
    assert data["segmentation"] == {
        "neck_channels": 256,
        "head_channels": 128,
        "dropout": 0.1,
        "reduce_labels": False,
    }
    assert GFNetConfig.from_dict(data) == config
    assert "task" not in PYRAMID.to_dict() and "segmentation" not in PYRAMID.to_dict()
    old = PYRAMID.to_dict()  # what releases before segmentation wrote
    assert GFNetConfig.from_dict(old).task == "classification"
    config.save(tmp_path)
    assert GFNetConfig.load(tmp_path) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "detection"}, "unknown task"),
        ({"segmentation": {"neck_channels": 8}}, "need task 'segmentation'"),
        ({"task": "segmentation", "segmentation": {"dropout": 1.5}}, "dropout"),
        ({"task": "segmentation", "segmentation": {"neck_channels": 0}}, "neck_channels"),
        ({"task": "segmentation", "segmentation": {"depth": 2}}, "unknown fields: depth"),
        ({"task": "segmentation", "segmentation": [1]}, "JSON object"),
        ({"task": "segmentation", "num_classes": 0}, "at least 1"),
    ],
)
def test_bad_segmentation_configs_are_refused(changes, message):
    data = {**PYRAMID.to_dict(), **changes}
    with pytest.raises(ConfigError, match=message):
        GFNetConfig.from_dict(data)


# --------------------------------------------------------------------------- files and weights
def test_segmentation_model_folder_round_trips_strictly(tmp_path):
    model = _segmenter(PYRAMID, class_names=list("abcde"))
    model.train()
    model(torch.randn(2, 3, 64, 64))  # BatchNorm statistics move away from their init
    save_model(model, tmp_path / "seg")
    saved = json.loads((tmp_path / "seg" / "config.json").read_text())
    assert saved["task"] == "segmentation" and saved["class_names"] == list("abcde")
    assert check_model_folder(tmp_path / "seg") == model.config
    loaded = load_model(str(tmp_path / "seg"))
    assert isinstance(loaded, GFNetForSegmentation) and not loaded.training
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    # weights that disagree with the config are refused, naming the key
    config = json.loads((tmp_path / "seg" / "config.json").read_text())
    config["num_classes"], config["class_names"] = 7, None
    (tmp_path / "seg" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="conv_seg"):
        load_model(str(tmp_path / "seg"))


def test_pretrained_backbone_comes_from_the_classifier_filters_resized_to_the_crop(tmp_path):
    classifier = create_architecture(PYRAMID)
    save_model(classifier, tmp_path / "clf")
    model = create_model(str(tmp_path / "clf"), pretrained=True, task="segmentation", num_classes=4)
    assert isinstance(model, GFNetForSegmentation) and model.num_classes == 4
    assert model.config.img_size == 512 and model.config.class_names is None
    first = model.backbone.blocks[0][0].filter.complex_weight
    assert tuple(first.shape[:2]) == (128, 65)  # a 512 crop: 128x128 tokens at stride 4
    source = classifier.blocks[0][0].filter.complex_weight
    torch.testing.assert_close(first, resize_filter(source.detach(), (128, 128)))
    torch.testing.assert_close(
        model.backbone.blocks[3][0].mlp.fc1.weight, classifier.blocks[3][0].mlp.fc1.weight
    )
    # another size on the fly: the filters are resized for the input's grid
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 64)).shape == (1, 4, 96, 64)
    # a segmentation folder loads as one; num_classes replaces only the classifier
    save_model(model, tmp_path / "seg")
    again = create_model(str(tmp_path / "seg"), pretrained=True, num_classes=6, img_size=64)
    assert again.num_classes == 6 and again.config.img_size == 64
    torch.testing.assert_close(
        again.neck.fpn_convs[0].conv.weight, model.neck.fpn_convs[0].conv.weight
    )


def test_pretrained_segmentation_arguments_are_checked(tmp_path):
    save_model(create_architecture(PYRAMID), tmp_path / "clf")
    with pytest.raises(UsageError, match="num_classes"):
        create_model(str(tmp_path / "clf"), pretrained=True, task="segmentation")
    with pytest.raises(UsageError, match="features_only"):
        create_model("gfnet-h-ti", task="segmentation", features_only=True)
    with pytest.raises(UsageError, match="features_only"):
        create_model(str(tmp_path / "clf"), pretrained=True, task="segmentation", num_classes=2,
                     features_only=True)  # fmt: skip
    with pytest.raises(UsageError, match="task must be"):
        create_model("gfnet-h-ti", task="detection")
    save_model(_segmenter(PYRAMID), tmp_path / "seg")
    with pytest.raises(UsageError, match="segmentation model"):
        create_model(str(tmp_path / "seg"), pretrained=True, task="classification")


def test_zoo_name_builds_the_papers_architecture_on_meta():
    with torch.device("meta"):
        model = create_model("gfnet-h-ti", task="segmentation", num_classes=150)
    assert model.config.img_size == 512 and model.config.segmentation == SegmentationConfig()
    assert model.feature_strides == [4, 8, 16, 32]
    assert model.backbone.blocks[0][0].filter.grid == (128, 128)


@pytest.mark.parametrize(("name", "paper_millions"),
                         [("gfnet-h-ti", 26.6), ("gfnet-h-s", 47.5), ("gfnet-h-b", 74.7)])
def test_parameters_match_the_papers_table_2_with_the_imagenet_classifier(name, paper_millions):
    """docs/segmentation.md: the paper's Table 2 counts the backbone's unused ImageNet
    classifier (width x 1000 + 1000) beside filters sized for the 512 crop; ours drops it."""
    with torch.device("meta"):
        model = create_model(name, task="segmentation", num_classes=150)
    last_width = model.config.embed_dim[-1]
    ours = sum(p.numel() for p in model.parameters())
    assert round((ours + last_width * 1000 + 1000) / 1e6, 1) == paper_millions


# --------------------------------------------------------------------------- FLOPs
def _conv_macs(height: int, width: int, c_in: int, c_out: int, kernel: int) -> int:
    return height * width * c_in * c_out * kernel * kernel


def test_flops_are_backbone_plus_the_convolutions_of_neck_and_head():
    config = _segmenter(PYRAMID).config
    size = (64, 96)
    backbone = GFNetArchitecture(PYRAMID.replace(num_classes=0), global_pool="").eval()
    backbone_macs = count_flops(backbone, torch.zeros(1, 3, *size))
    maps = _backbone_maps(PYRAMID)
    head_macs = 0
    for (channels, stride), length in zip(maps, _head_lengths([s for _, s in maps]), strict=True):
        rows, cols = size[0] // stride, size[1] // stride
        head_macs += _conv_macs(rows, cols, channels, NECK, 1)  # lateral
        head_macs += _conv_macs(rows, cols, NECK, NECK, 3)  # fpn conv
        for stage in range(length):  # each stage runs before its 2x upsampling
            scale = 2**stage if stride != maps[0][1] else 1
            c_in = NECK if stage == 0 else HEAD
            head_macs += _conv_macs(rows * scale, cols * scale, c_in, HEAD, 3)
    finest = maps[0][1]
    head_macs += _conv_macs(size[0] // finest, size[1] // finest, HEAD, CLASSES, 1)
    assert config_gflops(config, size) * 1e9 == pytest.approx(backbone_macs + head_macs, abs=1)


def test_profile_rows_for_segmentation_and_the_attention_baseline(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    PYRAMID.save(folder)
    options = ProfileOptions(warmup=0, repeats=1, measure_memory=False)
    rows = profile(
        str(folder), [64, 128], ["vit"], options, task="segmentation", num_classes=CLASSES
    )
    assert [(r.model, r.resolution) for r in rows] == [
        ("tiny+fpn", 64), ("tiny+fpn", 128), ("vit+fpn", 64), ("vit+fpn", 128),
    ]  # fmt: skip
    for row in rows:
        assert row.params > 0 and row.gflops > 0 and row.latency_ms > 0 and row.error is None
    built = create_architecture(PYRAMID, task="segmentation", num_classes=CLASSES)
    assert rows[0].params == built.num_params
    assert rows[0].gflops == pytest.approx(config_gflops(built.config, (64, 64)), abs=1e-4)
    gfnet_growth = rows[1].gflops / rows[0].gflops
    vit_growth = rows[3].gflops / rows[2].gflops
    assert gfnet_growth < vit_growth  # attention's tokens^2 term grows faster


# --------------------------------------------------------------------------- multi-GPU norm
def test_sync_batchnorm_leaves_a_model_alone_without_a_process_group():
    model = _segmenter(PYRAMID)
    assert sync_batchnorm(model, "cuda") is model
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_process_worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = _segmenter(PYRAMID)
        on_gpu = sync_batchnorm(_segmenter(PYRAMID), "cuda")  # converted, never run here
        on_cpu = sync_batchnorm(model)  # CPU processes keep BatchNorm
        ddp = nn.parallel.DistributedDataParallel(on_cpu)
        torch.manual_seed(rank)
        loss = ddp(torch.randn(2, 3, 64, 64)).logsumexp(1).mean()
        loss.backward()
        report = {
            "gpu_sync": sum(isinstance(m, nn.SyncBatchNorm) for m in on_gpu.modules()),
            "cpu_sync": sum(isinstance(m, nn.SyncBatchNorm) for m in on_cpu.modules()),
            "grad": float(model.decode_head.conv_seg.weight.grad.abs().sum()),
        }
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as handle:
            json.dump(report, handle)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_sync_batchnorm_converts_for_gpus_and_ddp_trains_on_cpu_with_gloo(tmp_path):
    torch.multiprocessing.spawn(
        _two_process_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True
    )
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    batch_norms = sum(isinstance(m, nn.BatchNorm2d) for m in _segmenter(PYRAMID).modules())
    for report in reports:
        assert report["gpu_sync"] == batch_norms > 0
        assert report["cpu_sync"] == 0 and report["grad"] > 0
    assert reports[0]["grad"] == pytest.approx(reports[1]["grad"])  # DDP averaged them


# --------------------------------------------------------------------------- labels and masks
def test_ade20k_class_names_ship_with_the_package():
    names = ade20k_class_names()
    assert len(names) == 150 == len(set(names))
    assert names[:3] == ["wall", "building", "sky"] and names[7] == "bed"
    assert names[-1] == "flag" and all(name == name.strip() for name in names)


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_masks_of_every_mode_read_back_as_class_indices(tmp_path, mode):
    values = np.arange(12 * 10).reshape(12, 10) % (200 if mode != "I;16" else 1000)
    if mode == "I;16":
        image = Image.fromarray(values.astype(np.uint16))
    else:
        image = Image.fromarray(values.astype(np.uint8))
        if mode == "P":
            image.putpalette([255 - (i % 256) for i in range(768)])  # colours are ignored
    assert image.mode == mode
    path = tmp_path / "mask.png"
    image.save(path)
    np.testing.assert_array_equal(open_mask(path), values)
    np.testing.assert_array_equal(open_mask({"bytes": path.read_bytes()}), values)


def test_colour_pictures_and_corrupt_files_are_refused_as_masks(tmp_path):
    Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "rgb.png")
    with pytest.raises(MaskReadError, match="not a mask of class indices"):
        open_mask(tmp_path / "rgb.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(MaskReadError, match="bad.png"):
        open_mask(tmp_path / "bad.png")


def test_reduce_labels_is_ade20ks_convention():
    raw = np.array([[0, 1, 2], [150, 255, 7]], dtype=np.uint8)
    expected = np.array([[IGNORE_INDEX, 0, 1], [149, IGNORE_INDEX, 6]], dtype=np.uint8)
    reduced = reduce_labels(raw)
    np.testing.assert_array_equal(reduced, expected)
    assert reduced.dtype == np.uint8


def test_mask_pngs_carry_the_fixed_palette_and_their_indices(tmp_path):
    colours = np.asarray(palette(), dtype=np.uint8).reshape(256, 3)
    assert colours[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert len({tuple(c) for c in colours}) == 256  # every index its own colour
    mask = np.array([[0, 1, 2], [3, 255, 149]], dtype=np.int64)
    image = mask_image(mask)
    assert image.mode == "P" and image.getpalette() == palette()
    image.save(tmp_path / "mask.png")
    np.testing.assert_array_equal(open_mask(tmp_path / "mask.png"), mask)
    np.testing.assert_array_equal(colorize(mask)[1, 1], colours[255])
    wide = mask_image(np.array([[0, 300]]))
    assert wide.mode == "I;16"


def test_profile_command_task_segmentation(run_cli, tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    PYRAMID.save(folder)
    result = run_cli(
        "profile", "--model", folder, "--task", "segmentation", "--num-classes", CLASSES,
        "--resolution", "64", "--compare", "vit", "--warmup", "0", "--repeats", "1",
        "--no-memory", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = result.json()
    assert [r["model"] for r in rows] == ["tiny+fpn", "vit+fpn"]
    built = create_architecture(PYRAMID, task="segmentation", num_classes=CLASSES)
    assert rows[0]["params"] == built.num_params
    bad = run_cli("profile", "--model", folder, "--task", "detection")
    assert_one_line_error(bad, 2, contains="--task")


@pytest.mark.slow
def test_a_segmentation_model_exports_to_onnx_checked_against_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from gfnet_cli.commands.export import export_model

    model = _segmenter(PYRAMID).eval()
    save_model(model, tmp_path / "seg")
    # the matmul form, asked for: the default (auto) keeps whichever form runs faster here
    result = export_model(tmp_path / "seg", tmp_path / "seg.onnx", fft="matmul")
    assert result.fft == "matmul" and result.max_abs_diff < 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "seg.onnx"))
    x = torch.randn(1, 3, 64, 64)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert logits.shape == (1, CLASSES, 64, 64)
    np.testing.assert_allclose(logits, expected, atol=1e-4)


# --------------------------------------------------------------------------- other commands
def test_embed_filters_and_robustness_on_a_segmentation_folder(run_cli, tmp_path):
    """embed gives the backbone's pooled features (a segmentation model has no classifier),
    visualize its backbone's filters; robustness, a classifier's measure, is refused before
    any data is read."""
    from gfnet_cli.analysis.filters import filters
    from gfnet_cli.commands.embed import embed
    from gfnet_cli.data.transforms import eval_transform

    model = _segmenter(PYRAMID).eval()
    folder = tmp_path / "seg"
    save_model(model, folder)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8))
    result = embed([picture], str(folder), device="cpu")
    backbone = model.backbone
    pixels = eval_transform(backbone.config)(picture).unsqueeze(0)
    with torch.no_grad():
        expected = backbone.forward_head(backbone.forward_features(pixels), pre_logits=True)
    expected = expected.mean(dim=(2, 3)) if expected.dim() == 4 else expected
    assert result.embeddings.shape == (1, PYRAMID.widths[-1])
    torch.testing.assert_close(result.embeddings, expected, atol=1e-5, rtol=0)

    shown = filters(str(folder))
    assert shown.num_layers == sum(PYRAMID.depth)
    assert [layer.stage for layer in shown.layers] == [1, 2, 3, 3, 4]

    refused = run_cli("robustness", "--model", folder, "--dataset", tmp_path / "no-such-data")
    assert_one_line_error(refused, 2, "is made for segmentation: robustness measures")
