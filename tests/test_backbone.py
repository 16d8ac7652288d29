"""GFNet as a backbone: timm's model contract, feature maps at any size, dense prediction.

The checks mirror timm's own tests of every model (tests/test_models.py there:
test_model_default_cfgs, test_model_forward, test_model_backward, test_model_forward_features,
test_model_forward_intermediates, test_features_only_grad_checkpointing_backward,
test_prune_intermediate_layers_params_used), run for all seven zoo architectures: shapes on
the meta device at their real widths, numbers on the same architectures made narrow.
"""

from __future__ import annotations

import copy
import fnmatch

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gfnet_cli.errors import ConfigError, UsageError
from gfnet_cli.hub.resolve import create_model, load_model
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models import (
    ZOO,
    FeatureExtractor,
    FeatureIndexError,
    GFNetArchitecture,
    GFNetConfig,
)

ZOO_NAMES = list(ZOO)


def _narrow(name: str, **changes) -> GFNetArchitecture:
    """The zoo architecture ``name`` (patch, depths, MLP ratios, layer scale) made narrow."""
    config = ZOO[name].config()
    if config.kind == "flat":
        changes = {"embed_dim": 16, "img_size": 2 * config.patch_size, **changes}
    else:
        changes = {"embed_dim": [8, 16, 16, 24], "img_size": 64, **changes}
    return create_model(name, num_classes=changes.pop("num_classes", 10), **changes)


def _stride(model: GFNetArchitecture) -> int:
    return model.config.stride


def _input(model: GFNetArchitecture, batch: int = 1, scale: tuple[int, int] = (2, 3), **kwargs):
    """A non-square input the patching divides: (2 x stride) by (3 x stride) pixels."""
    stride = _stride(model)
    return torch.randn(batch, 3, scale[0] * stride, scale[1] * stride, **kwargs)


# ------------------------------------------------------------ the contract, real widths (meta)
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_model_api_contract_on_meta(name):
    with torch.device("meta"):
        model = create_model(name).eval()
    # unknown constructor arguments raise, not silently ignored
    with pytest.raises(TypeError):
        create_model(name, not_a_model_arg=1)
    # no_weight_decay() names real parameters only
    names = [n for n, _ in model.named_parameters()]
    for pattern in model.no_weight_decay():
        assert any(fnmatch.fnmatch(n, pattern) for n in names), pattern
    assert model.num_classes == 1000 and model.num_features > 0 and model.head_hidden_size > 0
    state = model.state_dict()
    assert "head.weight" in state
    assert ("patch_embed.proj.weight" in state) or ("patch_embed.0.proj.weight" in state)

    height, width = model.config.image_size
    grid = (height // _stride(model), width // _stride(model))
    x = torch.randn(1, 3, height, width, device="meta")
    features = model.forward_features(x)  # unpooled, NCHW
    pre_logits = model.forward_head(features, pre_logits=True)
    assert features.shape == (1, model.num_features, *grid)
    assert pre_logits.shape == (1, model.head_hidden_size)
    assert model(x).shape == (1, 1000)

    # dtype changes after a forward leave no stale caches
    model.to(torch.bfloat16)
    assert model(x.to(torch.bfloat16)).dtype == torch.bfloat16
    model.to(torch.float32)

    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == pre_logits.shape
    model.reset_classifier(0, "")  # no classifier, no pooling: the feature map
    assert model(x).shape == features.shape

    with torch.device("meta"):
        headless = create_model(name, num_classes=0).eval()
        mapped = create_model(name, num_classes=0, global_pool="").eval()
    assert headless(x).shape == pre_logits.shape
    assert mapped(x).shape == features.shape


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_feature_info_and_intermediates_on_meta(name):
    with torch.device("meta"):
        model = create_model(name).eval()
    config = model.config
    if config.kind == "pyramid":
        assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
        assert [f["num_chs"] for f in model.feature_info] == config.widths
    else:
        assert len(model.feature_info) == config.depths[0]
        assert {f["reduction"] for f in model.feature_info} == {config.patch_size}
    assert all(set(f) >= {"num_chs", "reduction", "module"} for f in model.feature_info)
    x = torch.randn(1, 3, 7 * 32, 5 * 32, device="meta")  # non-square, any multiple of 32
    final, maps = model.forward_intermediates(x)
    assert final.shape == model.forward_features(x).shape
    assert len(maps) == len(model.feature_info)
    for info, feature in zip(model.feature_info, maps, strict=True):
        assert feature.shape == (
            1,
            info["num_chs"],
            224 // info["reduction"],
            160 // info["reduction"],
        )

    with torch.device("meta"):
        backbone = create_model(name, features_only=True)
    expected = 4 if config.kind == "pyramid" else 3
    assert len(backbone.feature_info) == expected
    outputs = backbone(x)
    assert len(outputs) == expected
    for feature, channels, reduction in zip(
        outputs, backbone.feature_info.channels(), backbone.feature_info.reduction(), strict=True
    ):
        assert feature.shape == (1, channels, 224 // reduction, 160 // reduction)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_reset_classifier_keeps_device_dtype_mode_and_frozen_weights(name):
    with torch.device("meta"):
        model = create_model(name)
    model.to(device="meta", dtype=torch.float64).eval()
    model.reset_classifier(0)
    model.reset_classifier(2)
    assert all(
        p.device.type == "meta" and p.dtype == torch.float64 for p in model.head.parameters()
    )
    assert not any(m.training for m in model.modules())

    with torch.device("meta"):
        frozen = create_model(name)
    frozen.requires_grad_(False)
    frozen.reset_classifier(0)
    frozen.reset_classifier(0, "")
    frozen.set_image_size(tuple(2 * s for s in frozen.config.image_size))
    assert not [n for n, p in frozen.named_parameters() if p.requires_grad]


# ------------------------------------------------------- the contract, numbers (narrow models)
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_forward_backward_and_checkpointing(name):
    model = _narrow(name, num_classes=42, drop_rate=0.0).eval()
    x = _input(model)
    with torch.no_grad():
        out = model(x)
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)
    assert out.shape == (1, 42) and not out.isnan().any()

    model.set_grad_checkpointing(False)
    model.train()
    model(_input(model, batch=2)).mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_forward_intermediates_agree_with_forward_features(name):
    model = _narrow(name).eval()
    x = _input(model)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=1e-5, atol=1e-8)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.head(pooled), model(x))
        model.set_grad_checkpointing()
        final_checkpointed, _ = model.forward_intermediates(x)
        torch.testing.assert_close(final_checkpointed, final, rtol=1e-4, atol=1e-5)
        # stop_early gives the same maps; other layouts are the same numbers
        taken = [0, len(model.feature_info) // 2]
        early = model.forward_intermediates(x, taken, stop_early=True, intermediates_only=True)
        late = model.forward_intermediates(x, taken, intermediates_only=True)
        nhwc = model.forward_intermediates(x, taken, output_fmt="NHWC", intermediates_only=True)
        nlc = model.forward_intermediates(x, taken, output_fmt="NLC", intermediates_only=True)
    for a, b, c, d in zip(early, late, nhwc, nlc, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(c.permute(0, 3, 1, 2), b)
        torch.testing.assert_close(d, c.flatten(1, 2))
    assert len(maps) == len(model.feature_info)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_features_only_gradients_are_the_same_with_checkpointing(name):
    x = _input(_narrow(name), batch=2)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        backbone = _narrow(name, drop_path_rate=0.1, features_only=True).train()
        backbone.set_grad_checkpointing(checkpointing)
        assert backbone.grad_checkpointing is checkpointing
        torch.manual_seed(1)  # the same drop-path draws in both runs
        sum(f.pow(2).mean() for f in backbone(x)).backward()
        grads.append([p.grad for p in backbone.parameters()])
        assert all(g is not None for g in grads[-1])  # pruned: every parameter is used (DDP)
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_pruning_leaves_no_unused_parameters(name):
    model = _narrow(name, drop_rate=0.5)
    x = _input(model, batch=2)
    count = len(model.feature_info)
    for indices, prune_norm in (([0], False), ([count - 1], False), (list(range(count)), True)):
        pruned = copy.deepcopy(model).train()
        taken = pruned.prune_intermediate_layers(indices, prune_norm=prune_norm)
        maps = pruned.forward_intermediates(x, taken, norm=not prune_norm, intermediates_only=True)
        sum(f.sum() for f in maps).backward()
        assert not [n for n, p in pruned.named_parameters() if p.grad is None]
        pruned = copy.deepcopy(model).eval()
        pruned.prune_intermediate_layers(indices, prune_norm=prune_norm)
        with torch.no_grad():
            assert torch.equal(pruned(x), pruned(x))
            assert pruned(x).shape[1] == pruned.num_features


def test_a_pruned_model_is_not_saved_as_a_model_folder(tmp_path):
    """A cut model's weights no longer match its config: the folder would not load again."""
    model = create_model("gfnet-ti", img_size=32, num_classes=3)
    model.prune_intermediate_layers([len(model.feature_info) - 1])  # the head only: still whole
    model.save_pretrained(tmp_path / "whole")
    assert load_model(str(tmp_path / "whole")).num_classes == 0
    model.prune_intermediate_layers([0])
    with pytest.raises(UsageError, match="prune_intermediate_layers"):
        model.save_pretrained(tmp_path / "cut")
    assert not (tmp_path / "cut").exists()


# --------------------------------------------------------------- features_only, any size
@pytest.mark.parametrize(
    ("kind", "size"), [("pyramid", (96, 160)), ("pyramid", (384, 512)), ("flat", (48, 80))]
)
def test_feature_maps_at_any_size_the_patching_divides(kind, size):
    name = "gfnet-h-ti" if kind == "pyramid" else "gfnet-ti"
    backbone = _narrow(name, features_only=True).eval()
    native = backbone.config.image_size
    assert native != size  # position embedding and filters resized on the fly
    with torch.no_grad():
        maps = backbone(torch.randn(2, 3, *size))
    info = backbone.feature_info
    assert [tuple(m.shape) for m in maps] == [
        (2, c, size[0] // r, size[1] // r)
        for c, r in zip(info.channels(), info.reduction(), strict=True)
    ]
    if kind == "pyramid":
        assert info.reduction() == [4, 8, 16, 32] and info.channels() == [8, 16, 16, 24]
        assert info.module_name() == [f"blocks.{i}" for i in range(4)]
    else:
        assert info.reduction() == [16, 16, 16] and backbone.out_indices == (9, 10, 11)


def test_out_indices_choose_maps_and_describe_them():
    backbone = _narrow("gfnet-h-ti", features_only=True, out_indices=(1, 3))
    assert backbone.out_indices == (1, 3)
    assert backbone.feature_info.get_dicts(keys=["num_chs", "reduction"]) == [
        {"num_chs": 16, "reduction": 8},
        {"num_chs": 24, "reduction": 32},
    ]
    assert backbone.feature_info[1]["index"] == 3 and len(backbone.feature_info) == 2
    assert [m.shape[1] for m in backbone(torch.randn(1, 3, 64, 96))] == [16, 24]

    last_two = _narrow("gfnet-h-ti", features_only=True, out_indices=2)  # timm: an int = last n
    assert last_two.out_indices == (2, 3)
    flat = _narrow("gfnet-xs", features_only=True, out_indices=(-1, 0))
    assert flat.out_indices == (0, 11) and len(flat.model.blocks) == 12
    early = _narrow("gfnet-h-ti", features_only=True, out_indices=(0, 1))
    assert len(early.model.blocks) == 2 and isinstance(early.model.norm, nn.Identity)


@pytest.mark.parametrize(
    ("out_indices", "message"),
    [
        ((0, 4), "valid indices are 0 to 3 (or -4 to -1)"),
        ((-5,), "valid indices are 0 to 3"),
        (5, "choose 1 to 4"),
        (0, "choose 1 to 4"),
        ((1, 1), "twice"),
        ((), "selects no feature map"),
        ("0,1", "must be an int"),
    ],
)
def test_out_indices_out_of_range_name_the_valid_range(out_indices, message):
    with pytest.raises(
        FeatureIndexError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as info:
        _narrow("gfnet-h-ti", features_only=True, out_indices=out_indices)
    assert isinstance(info.value, ValueError) and isinstance(info.value, UsageError)
    assert info.value.param == "out_indices"


def test_bad_sizes_and_arguments_are_refused_clearly():
    backbone = _narrow("gfnet-h-ti", features_only=True)
    with pytest.raises(ConfigError, match="multiples of 32"):
        backbone(torch.randn(1, 3, 64, 80))
    model = _narrow("gfnet-ti")
    with pytest.raises(ConfigError, match="multiples of 16"):
        model.forward_intermediates(torch.randn(1, 3, 40, 32))
    with pytest.raises(FeatureIndexError, match="valid indices are 0 to 11"):
        model.forward_intermediates(torch.randn(1, 3, 32, 32), indices=[12])
    with pytest.raises(UsageError, match="output_fmt"):
        model.forward_intermediates(torch.randn(1, 3, 32, 32), output_fmt="NCL")
    with pytest.raises(UsageError, match="features_only=True") as info:
        create_model("gfnet-ti", out_indices=(1,))
    assert info.value.params == ("out_indices", "features_only")
    with pytest.raises(UsageError, match="global_pool"):
        create_model("gfnet-ti", global_pool="max")


# ------------------------------------------------------------------ heads, old API kept
def test_forward_features_is_the_normed_map_that_forward_pools():
    model = _narrow("gfnet-h-ti").eval()
    x = _input(model)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, 24, 2, 3)
        assert features.is_contiguous(memory_format=torch.channels_last)  # a free view
        torch.testing.assert_close(model(x), model.head(features.mean(dim=(2, 3))))
        model.reset_classifier(5, "")  # unpooled with a classifier: logits at every position
        dense = model(x)
    assert dense.shape == (1, 5, 2, 3)
    torch.testing.assert_close(dense.mean(dim=(2, 3)), model.head(features.mean(dim=(2, 3))))


def test_reset_classifier_keeps_class_names_and_the_old_call():
    model = _narrow("gfnet-ti")
    model.reset_classifier(2, class_names=["cat", "dog"])
    assert model.config.labels == ["cat", "dog"] and model.global_pool == "avg"
    model.reset_classifier(3, ["a", "b", "c"])  # the 0.1 signature: names second
    assert model.config.labels == ["a", "b", "c"] and model.head.out_features == 3
    assert model.get_classifier() is model.head


def test_pretrained_weights_load_into_a_features_only_model(tmp_path):
    source = _narrow("gfnet-h-ti").eval()
    save_model(source, tmp_path / "model")
    backbone = create_model(str(tmp_path / "model"), pretrained=True, features_only=True)
    assert isinstance(backbone, FeatureExtractor)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = source.forward_intermediates(x, intermediates_only=True)
        for got, want in zip(backbone(x), expected, strict=True):
            torch.testing.assert_close(got, want)
    # or wrap a loaded model yourself
    wrapped = FeatureExtractor(load_model(str(tmp_path / "model")), out_indices=(-1,), norm=True)
    with torch.no_grad():
        (last,) = wrapped(x)
        torch.testing.assert_close(last, source.forward_features(x))


# ---------------------------------------------------------------- dense prediction proof
class TinyFPN(nn.Module):
    """A feature pyramid network (Lin et al. 2017) over the four maps, and a per-pixel head."""

    def __init__(self, backbone: FeatureExtractor, width: int, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.lateral = nn.ModuleList(
            nn.Conv2d(c, width, 1) for c in backbone.feature_info.channels()
        )
        self.smooth = nn.Conv2d(width, width, 3, padding=1)
        self.classify = nn.Conv2d(width, classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(images)
        top = self.lateral[-1](maps[-1])
        for lateral, feature in zip(self.lateral[-2::-1], maps[-2::-1], strict=True):
            top = lateral(feature) + F.interpolate(top, size=feature.shape[-2:], mode="nearest")
        logits = self.classify(F.relu(self.smooth(top)))  # stride 4
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _segmentation_batch(generator: torch.Generator, batch: int, size: tuple[int, int]):
    """Noise with one bright rectangle per image; the mask marks the rectangle."""
    height, width = size
    images = torch.randn(batch, 3, height, width, generator=generator) * 0.3
    masks = torch.zeros(batch, height, width, dtype=torch.long)
    for i in range(batch):
        top, left = (int(v) for v in torch.randint(0, height // 2, (2,), generator=generator))
        box_h, box_w = height // 4 + top // 4, width // 4 + left // 4
        images[i, :, top : top + box_h, left : left + box_w] += 1.5
        masks[i, top : top + box_h, left : left + box_w] = 1
    return images, masks


def test_a_minimal_fpn_learns_segmentation_at_512_by_384():
    torch.manual_seed(0)
    config = GFNetConfig(
        kind="pyramid", patch_size=4, embed_dim=[8, 16, 24, 32], depth=[1, 1, 1, 1],
        init_values=1e-5, img_size=64, num_classes=0,
    )  # fmt: skip
    backbone = create_model(config, features_only=True)
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    net = TinyFPN(backbone, width=16, classes=2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    images, masks = _segmentation_batch(generator, 2, (384, 512))
    losses = []
    net.train()
    for _ in range(12):
        loss = F.cross_entropy(net(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert net(images).shape == (2, 2, 384, 512)
    assert losses[-1] < 0.6 * losses[0], losses
