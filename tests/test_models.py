"""The model library: exact parity with the authors' models, any input size, configs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from gfnet_cli import GFNetConfig, create_model, list_models
from gfnet_cli.convert import extract_state_dict, infer_config, read_checkpoint
from gfnet_cli.errors import ConfigError
from gfnet_cli.flops import config_gflops
from gfnet_cli.models import GFNet, adapt_state_dict
from gfnet_cli.serialization import model_from_state_dict


def tiny(data_dir, name: str) -> GFNet:
    state_dict, _ = extract_state_dict(read_checkpoint(data_dir / f"{name}.pth"))
    return model_from_state_dict(infer_config(state_dict), state_dict).eval()


@pytest.fixture(scope="module")
def expected():
    from tests.conftest import DATA

    return load_file(str(DATA / "tiny_expected.safetensors"))


@pytest.mark.parametrize("name", ["tiny-gfnet", "tiny-gfnet-h"])
def test_tiny_checkpoints_match_authors_logits(data_dir, expected, name):
    model = tiny(data_dir, name)
    with torch.no_grad():
        logits = model(expected["input_64"])
    torch.testing.assert_close(logits, expected[f"{name}.logits_64"], atol=1e-5, rtol=0)


def test_run_time_resize_matches_authors_finetune_resize(data_dir, expected):
    model = tiny(data_dir, "tiny-gfnet")
    with torch.no_grad():
        logits = model(expected["input_96"])
    torch.testing.assert_close(
        logits, expected["tiny-gfnet.logits_96_after_resize"], atol=1e-5, rtol=0
    )


def test_load_time_resize_matches_authors_finetune_resize(data_dir, expected):
    model = tiny(data_dir, "tiny-gfnet")
    model.set_image_size(96)
    assert model.config.img_size == 96
    assert model.state_dict()["blocks.0.filter.complex_weight"].shape == (12, 7, 32, 2)
    assert model.state_dict()["pos_embed"].shape == (1, 144, 32)
    with torch.no_grad():
        logits = model(expected["input_96"])
    torch.testing.assert_close(
        logits, expected["tiny-gfnet.logits_96_after_resize"], atol=1e-5, rtol=0
    )


def test_adapt_state_dict_resizes_for_a_new_config(data_dir, expected):
    model = tiny(data_dir, "tiny-gfnet")
    target = model.config.replace(img_size=96)
    resized = GFNet(target).eval()
    resized.load_state_dict(adapt_state_dict(model.state_dict(), model.config, target))
    with torch.no_grad():
        logits = resized(expected["input_96"])
    torch.testing.assert_close(
        logits, expected["tiny-gfnet.logits_96_after_resize"], atol=1e-5, rtol=0
    )


def _reference_shapes():
    from tests.conftest import DATA

    return json.loads((DATA / "official_state_dict_shapes.json").read_text())


@pytest.mark.parametrize("variant", list(_reference_shapes()))
def test_state_dict_keys_and_shapes_are_the_authors(variant):
    reference = _reference_shapes()[variant]
    name, size = variant.split("@")
    with torch.device("meta"):
        model = create_model(name, img_size=int(size))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(reference)
    assert ours == reference


def test_param_counts_equal_the_reference(data_dir):
    zoo = json.loads((data_dir / "model_zoo.json").read_text())
    for variant, facts in zoo.items():
        name, size = variant.split("@")
        with torch.device("meta"):
            model = create_model(name, img_size=int(size))
        assert model.num_params == facts["params"], variant


def test_gflops_within_four_percent_of_published(data_dir):
    zoo = json.loads((data_dir / "model_zoo.json").read_text())
    for variant, facts in zoo.items():
        name, size = variant.split("@")
        config = create_model(name, img_size=int(size)).config
        gflops = config_gflops(config)
        # FFTs add to the matmul/conv count, never subtract
        assert gflops >= facts["matmul_conv_gmacs"] - 1e-3
        if "published" in facts:
            published = facts["published"]["gflops"]
            assert abs(gflops - published) / published <= 0.04, (variant, gflops, published)


@pytest.mark.parametrize("name", ["gfnet-ti", "gfnet-h-ti"])
def test_non_square_input_runs(name):
    model = create_model(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 320))
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()


def test_non_square_native_size():
    config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=[32, 48], num_classes=3)
    model = GFNet(config).eval()
    assert model.state_dict()["pos_embed"].shape == (1, 4 * 6, 16)
    assert model.state_dict()["blocks.0.filter.complex_weight"].shape == (4, 4, 16, 2)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 48)).shape == (2, 3)
        assert model(torch.randn(2, 3, 48, 32)).shape == (2, 3)


def test_size_the_patching_does_not_divide_is_refused():
    model = create_model("gfnet-h-ti").eval()
    with pytest.raises(ConfigError, match="multiples of 32"):
        model(torch.randn(1, 3, 224, 240))
    with pytest.raises(ConfigError):
        create_model("gfnet-ti", img_size=230)


def test_resized_filters_are_cached_at_inference_only():
    config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3)
    model = GFNet(config).eval()
    gfilter = model.blocks[0].filter
    with torch.no_grad():
        first = gfilter.filter_for((6, 6))
        assert gfilter.filter_for((6, 6)) is first
        model.blocks[0].filter.complex_weight.add_(1.0)  # an optimizer step changes the weight
        assert gfilter.filter_for((6, 6)) is not first
    # with autograd on, the resize is part of the graph: gradients reach the native filter
    model.train()
    model(torch.randn(2, 3, 48, 48)).sum().backward()
    assert model.blocks[0].filter.complex_weight.grad is not None
    assert model.pos_embed.grad is not None


def test_training_step_at_another_size_changes_weights():
    model = create_model(
        GFNetConfig(patch_size=8, embed_dim=16, depth=2, img_size=32, num_classes=4)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.blocks[0].filter.complex_weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(
        model(torch.randn(4, 3, 40, 56)), torch.tensor([0, 1, 2, 3])
    )
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.blocks[0].filter.complex_weight)


def test_pyramid_layer_scale_and_drop_path():
    model = create_model("gfnet-h-s")
    block = model.blocks[0][0]
    assert torch.allclose(block.gamma, torch.full_like(block.gamma, 1e-5))
    assert model.blocks[-1][-1].drop_path.p == pytest.approx(0.2)
    flat = create_model("gfnet-s")
    assert flat.blocks[-1].drop_path.p == pytest.approx(0.15)
    assert flat.blocks[0].gamma is None


def test_create_model_overrides_and_zoo_listing():
    assert list_models() == [
        "gfnet-ti",
        "gfnet-xs",
        "gfnet-s",
        "gfnet-b",
        "gfnet-h-ti",
        "gfnet-h-s",
        "gfnet-h-b",
    ]
    model = create_model("gfnet-ti", num_classes=5, depth=2, img_size=64)
    assert model.config.num_classes == 5 and model.config.class_names is None
    assert len(model.blocks) == 2 and model.config.architecture == "gfnet-ti"
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    pyramid = create_model("gfnet-h-ti", embed_dim=[8, 16, 24, 32], depth=[1, 1, 1, 1], img_size=64)
    assert pyramid.config.widths == [8, 16, 24, 32]
    with pytest.raises(Exception, match="unknown model"):
        create_model("gfnet-huge")


def test_config_round_trip_and_validation(tmp_path):
    config = create_model("gfnet-h-ti", num_classes=3, class_names=["a", "b", "c"]).config
    config.save(tmp_path)
    loaded = GFNetConfig.load(tmp_path)
    assert loaded == config
    assert loaded.labels == ["a", "b", "c"]
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GFNetConfig.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"kind": "flat", "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown fields: colour"):
        GFNetConfig.load(tmp_path)
    with pytest.raises(ConfigError, match="4"):
        GFNetConfig(kind="pyramid", embed_dim=[1, 2], patch_size=4, img_size=64)
    with pytest.raises(ConfigError, match="class names"):
        GFNetConfig(num_classes=2, class_names=["a"])


def test_dtype_is_preserved_through_the_filter():
    model = create_model(
        GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3)
    )
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 32, 32))
    assert torch.isfinite(out.float()).all()
