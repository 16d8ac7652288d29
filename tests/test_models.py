"""The model library: exact parity with the authors' models, any input size, configs, and
the fused CPU inference path (same arithmetic as the plain one, and it really runs)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gfnet_cli import GFNetConfig, create_model, list_models
from gfnet_cli.device import autocast_context
from gfnet_cli.errors import ConfigError
from gfnet_cli.hub.convert import extract_state_dict, infer_config, read_checkpoint
from gfnet_cli.hub.serialization import model_from_state_dict
from gfnet_cli.models import GFNetArchitecture, adapt_state_dict, layers
from gfnet_cli.models.flops import config_gflops
from gfnet_cli.models.layers import GlobalFilter, Mlp, fused_inference

TINY = GFNetConfig(patch_size=8, embed_dim=32, depth=2, img_size=32, num_classes=10)


def tiny(data_dir, name: str) -> GFNetArchitecture:
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


def _resize_at_run_time(model: GFNetArchitecture) -> GFNetArchitecture:
    return model  # a 96 px input is enough: filters and position embedding follow


def _resize_with_set_image_size(model: GFNetArchitecture) -> GFNetArchitecture:
    model.set_image_size(96)
    assert model.config.img_size == 96
    assert model.state_dict()["blocks.0.filter.complex_weight"].shape == (12, 7, 32, 2)
    assert model.state_dict()["pos_embed"].shape == (1, 144, 32)
    return model


def _resize_the_state_dict(model: GFNetArchitecture) -> GFNetArchitecture:
    target = model.config.replace(img_size=96)
    resized = GFNetArchitecture(target).eval()
    resized.load_state_dict(adapt_state_dict(model.state_dict(), model.config, target))
    return resized


@pytest.mark.parametrize(
    "resize",
    [_resize_at_run_time, _resize_with_set_image_size, _resize_the_state_dict],
    ids=["at run time", "set_image_size", "adapt_state_dict"],
)
def test_resizing_matches_the_authors_finetune_resize(data_dir, expected, resize):
    model = resize(tiny(data_dir, "tiny-gfnet"))
    with torch.no_grad():
        logits = model(expected["input_96"])
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
    model = GFNetArchitecture(config).eval()
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
    model = GFNetArchitecture(config).eval()
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


@pytest.mark.parametrize("kind", ["flat", "pyramid"])
def test_compiling_at_another_size_gives_one_graph_without_breaks(kind):
    # The per-size cache (a dict keyed by _version/data_ptr) would break the graph at every
    # filter and at the position embedding; under compilation it is bypassed.
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    size = 32 if kind == "flat" else 64
    config = GFNetConfig(patch_size=4, embed_dim=[8, 8, 8, 8] if kind == "pyramid" else 16,
                         depth=[1, 1, 1, 1] if kind == "pyramid" else 2, img_size=size,
                         kind=kind, num_classes=3)  # fmt: skip
    model = GFNetArchitecture(config).eval()
    inputs = torch.randn(2, 3, size + size // 2, size + size // 2)  # not the native size
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(inputs)
        counter = CompileCounter()
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        expected = model(inputs)
        torch.testing.assert_close(compiled(inputs), expected)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1 and counter.frame_count == 1


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


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_is_preserved_through_the_filter(fused, dtype):
    gfilter = GlobalFilter(16, (4, 4)).eval()
    x = torch.randn(2, 4, 4, 16).to(dtype)
    with torch.no_grad(), fused_inference(fused):
        out = gfilter(x)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_bf16_autocast_gives_bf16_logits_on_either_path(fused):
    model = create_model(
        GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3)
    ).eval()
    with torch.no_grad(), fused_inference(fused), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 32, 32))
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()


# --------------------------------------------------------------------------- the fast path
@pytest.fixture
def fused_calls(monkeypatch) -> list[torch.dtype]:
    """The dtype of every call of the fused MLP kernel (oneDNN's linear with post-ops)."""
    calls: list[torch.dtype] = []
    original = Mlp._forward_fused

    def counting(self, x, residual, dtype):
        calls.append(dtype)
        return original(self, x, residual, dtype)

    monkeypatch.setattr(Mlp, "_forward_fused", counting)
    return calls


def assert_fused_ran(calls: list[torch.dtype], blocks: int, dtype=torch.float32) -> None:
    """The fused path ran once per block, in ``dtype``, wherever this build can run it."""
    if not layers._HAS_ONEDNN_LINEAR:
        return  # no oneDNN linear in this PyTorch build: the plain path is all there is
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return  # no native bf16 on this CPU: autocast keeps the plain path
    assert calls == [dtype] * blocks, calls


def reference_forward(model: GFNetArchitecture, images: torch.Tensor) -> torch.Tensor:
    """A flat GFNet computed the way the paper's listing does, from ``model``'s weights."""
    weights = model.state_dict()
    x = F.conv2d(
        images, weights["patch_embed.proj.weight"], weights["patch_embed.proj.bias"], stride=8
    )
    x = x.flatten(2).transpose(1, 2) + weights["pos_embed"]
    batch, tokens, channels = x.shape
    side = int(math.sqrt(tokens))
    for i in range(len(model.blocks)):
        p = f"blocks.{i}."
        y = F.layer_norm(
            x, (channels,), weights[p + "norm1.weight"], weights[p + "norm1.bias"], 1e-6
        )
        y = torch.fft.rfft2(y.view(batch, side, side, channels), dim=(1, 2), norm="ortho")
        y = y * torch.view_as_complex(weights[p + "filter.complex_weight"])
        y = torch.fft.irfft2(y, s=(side, side), dim=(1, 2), norm="ortho").reshape(x.shape)
        y = F.layer_norm(
            y, (channels,), weights[p + "norm2.weight"], weights[p + "norm2.bias"], 1e-6
        )
        y = F.gelu(F.linear(y, weights[p + "mlp.fc1.weight"], weights[p + "mlp.fc1.bias"]))
        x = x + F.linear(y, weights[p + "mlp.fc2.weight"], weights[p + "mlp.fc2.bias"])
    x = F.layer_norm(x, (channels,), weights["norm.weight"], weights["norm.bias"], 1e-6)
    return F.linear(x.mean(1), weights["head.weight"], weights["head.bias"])


def fused_and_plain(model: GFNetArchitecture, images: torch.Tensor, calls: list, blocks: int):
    """The logits of the fused path (checked to have run) and of the plain path (without it)."""
    with torch.inference_mode():
        fused = model(images)
        assert_fused_ran(calls, blocks=blocks)
        calls.clear()
        with fused_inference(False):
            plain = model(images)
        assert calls == []
    return fused, plain


def test_fast_path_matches_the_reference_within_1e4(fused_calls):
    config = GFNetConfig(patch_size=8, embed_dim=64, depth=3, img_size=64, num_classes=10)
    model = GFNetArchitecture(config).eval()
    images = torch.randn(4, 3, 64, 64)
    fused, plain = fused_and_plain(model, images, fused_calls, blocks=3)
    with torch.inference_mode():
        expected = reference_forward(model, images)
    torch.testing.assert_close(fused, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(plain, expected, atol=1e-4, rtol=0)


def test_pyramid_fast_path_matches_the_plain_path(fused_calls):
    model = create_model("gfnet-h-ti", embed_dim=[16, 32, 48, 64], depth=[1, 1, 2, 1], img_size=64)
    fused, plain = fused_and_plain(model.eval(), torch.randn(2, 3, 64, 64), fused_calls, 5)
    torch.testing.assert_close(fused, plain, atol=1e-4, rtol=0)


def test_cached_bf16_weights_follow_weight_updates(fused_calls):
    model = GFNetArchitecture(TINY).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), autocast_context("cpu", "bf16"):
        before = model(images).float()
    assert_fused_ran(fused_calls, blocks=2, dtype=torch.bfloat16)
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.mul_(3.0)
    with torch.inference_mode(), autocast_context("cpu", "bf16"):
        after = model(images).float()
    assert not torch.allclose(before, after)


def test_autograd_takes_the_plain_path(fused_calls):
    model = GFNetArchitecture(TINY).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert fused_calls == []
    assert out.requires_grad
    out.sum().backward()
    assert model.blocks[0].mlp.fc1.weight.grad is not None


def test_bf16_agrees_with_fp32_on_argmax(fused_calls):
    config = GFNetConfig(patch_size=8, embed_dim=64, depth=3, img_size=64, num_classes=10)
    model = GFNetArchitecture(config).eval()
    with torch.no_grad():  # a head with some spread, so argmax is not decided by noise
        model.head.weight.mul_(20)
    images = torch.randn(64, 3, 64, 64)
    with torch.inference_mode():
        fp32 = model(images)
        fused_calls.clear()
        with autocast_context("cpu", "bf16"):
            bf16 = model(images)
        assert_fused_ran(fused_calls, blocks=3, dtype=torch.bfloat16)
    agree = (fp32.argmax(1) == bf16.float().argmax(1)).float().mean().item()
    assert agree >= 0.9, agree
    torch.testing.assert_close(bf16.float(), fp32, atol=0.1, rtol=0.05)


def _tiny_config(kind: str) -> GFNetConfig:
    if kind == "flat":
        return GFNetConfig(kind="flat", patch_size=8, embed_dim=32, depth=2, img_size=32,
                           num_classes=5)  # fmt: skip
    return GFNetConfig(kind="pyramid", patch_size=4, embed_dim=[8, 16, 16, 32],
                       depth=[1, 1, 2, 1], init_values=1e-3, img_size=64,
                       num_classes=5)  # fmt: skip


def test_no_weight_decay_names_the_position_embedding_and_every_filter():
    for kind in ("flat", "pyramid"):
        model = create_model(_tiny_config(kind))
        names = model.no_weight_decay()
        filters = {n for n, _ in model.named_parameters() if n.endswith("complex_weight")}
        assert names == {"pos_embed"} | filters and filters


@pytest.mark.parametrize("kind", ["flat", "pyramid"])
def test_grad_checkpointing_gives_the_same_gradients(kind):
    config = _tiny_config(kind).replace(drop_path_rate=0.2)
    model = create_model(config).train()
    images = torch.randn(2, 3, *config.image_size)

    def gradients(enable: bool) -> dict[str, torch.Tensor]:
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(0)  # the same drop-path masks in both runs
        model(images).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6)
