"""Semantic segmentation: a GFNet backbone under Semantic FPN, as mmsegmentation builds it.

The paper's Table 2 puts Semantic FPN (Kirillov et al., 2019) on GFNet-H following PVT's
configuration (the authors' answer in their repository's first issue): mmsegmentation's
``FPN`` neck and ``FPNHead`` decode head. This module is that model in plain torch:

- **backbone**: a :class:`~gfnet_cli.models.gfnet.GFNetArchitecture` without classifier. A
  pyramid model gives its four stage maps (strides 4/8/16/32, the last one normed); a flat
  model its last block's normed map (stride 16), which :class:`SimpleFeaturePyramid` turns
  into four, as ViTDet does and with the layers of mmsegmentation's ``Feature2Pyramid``: two
  transposed convolutions up (stride 4), one (stride 8), the map itself (16), a max-pool down
  (32).
- **neck** (:class:`FPN`): a 1x1 lateral convolution per level to ``neck_channels``, a
  top-down path (nearest-neighbour upsampling, summed), a 3x3 convolution per level; no norm.
- **head** (:class:`FPNHead`): per level, ``max(1, log2(stride / 4))`` stages of 3x3
  convolution + BatchNorm + ReLU, each followed by 2x bilinear upsampling on the coarser
  levels; the levels are summed at stride 4; channel dropout, then a 1x1 classifier.
- the logits are upsampled bilinearly (``align_corners=False``) to the input size.

Any input size works: an input the model cannot divide into its coarsest level is padded with
zeros at the bottom and right (mmsegmentation's ``SegDataPreProcessor`` pads the same way) and
the padding is cut from the logits. The global filters follow the input's grid as in
classification: resized once to the training crop (:meth:`GFNetForSegmentation.set_image_size`),
and on the fly, cached outside training, for any other size.

The head's BatchNorm becomes SyncBatchNorm under multi-GPU DDP (:func:`sync_batchnorm`), and
stays per-process BatchNorm where SyncBatchNorm cannot run (CPU processes under gloo).
Parameter names are mmsegmentation's (``neck.lateral_convs.0.conv.weight``,
``decode_head.scale_heads.2.0.bn.weight``, ``decode_head.conv_seg.weight``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gfnet_cli.errors import ConfigError, UsageError
from gfnet_cli.models.config import GFNetConfig, SegmentationConfig
from gfnet_cli.models.gfnet import GFNetArchitecture

#: PVT's (and so the paper's) ADE20K training crop: the size segmentation backbones get
DEFAULT_CROP = 512
#: levels of the feature pyramid, strides 4/8/16/32 for the zoo's models
PYRAMID_LEVELS = 4
#: devices whose processes SyncBatchNorm can synchronize (torch's own list)
_SYNC_BN_DEVICES = ("cuda", "hpu", "xpu")


# --------------------------------------------------------------------------- building blocks
class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that normalizes a batch of one value per channel with its running statistics.

    A training batch of one image whose coarsest map is 1x1 (a 32-pixel crop at stride 32; the
    last, short batch of an epoch) has no batch variance: torch's BatchNorm refuses it, which
    ended a run mid-epoch. Such a batch is normalized as in evaluation and leaves the running
    statistics alone; every other batch is torch's BatchNorm unchanged. SyncBatchNorm
    (:func:`sync_batchnorm`) replaces it on GPUs, where the count is across processes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() == x.shape[1]:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, momentum=0.0, eps=self.eps)  # fmt: skip
        return super().forward(x)


class ConvModule(nn.Module):
    """Convolution, then optional BatchNorm and ReLU: mmcv's ``ConvModule``, with its names.

    With a norm the convolution has no bias (mmcv's ``bias="auto"``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, norm: bool, relu: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not norm
        )
        self.bn = BatchNorm2d(out_channels) if norm else None
        self.activate = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class SimpleFeaturePyramid(nn.Module):
    """Four maps from one: strides s/4, s/2, s and 2s from a flat model's stride-s map.

    ViTDet's simple feature pyramid with mmsegmentation's ``Feature2Pyramid`` layers (widths
    kept): 2x2 stride-2 transposed convolutions up (twice, with BatchNorm and GELU between, for
    s/4), a 2x2 max-pool down.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.upsample_4x = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
            BatchNorm2d(channels),
            nn.GELU(),
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
        )
        self.upsample_2x = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        )
        self.downsample_2x = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.upsample_4x(x), self.upsample_2x(x), x, self.downsample_2x(x)]


class FPN(nn.Module):
    """mmsegmentation's ``FPN`` neck (no extra levels, no norm): laterals, top-down, 3x3 out."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.lateral_convs = nn.ModuleList(
            ConvModule(channels, out_channels, 1, norm=False, relu=False)
            for channels in in_channels
        )
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, norm=False, relu=False) for _ in in_channels
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features, strict=True)]
        for level in range(len(laterals) - 1, 0, -1):  # coarse to fine
            finer = laterals[level - 1]
            top_down = F.interpolate(laterals[level], size=finer.shape[-2:], mode="nearest")
            laterals[level - 1] = finer + top_down
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]


def head_length(stride: int, finest: int) -> int:
    """Conv stages a level of :class:`FPNHead` gets: ``max(1, log2(stride / finest))``."""
    return max(1, int(math.log2(stride) - math.log2(finest)))


class FPNHead(nn.Module):
    """mmsegmentation's ``FPNHead`` (Semantic FPN's decoder), ``align_corners=False``.

    ``strides`` are the levels' strides relative to one another (the finest first); each level
    is brought to the finest by ``head_length`` conv-BN-ReLU stages with 2x bilinear
    upsampling after each, the levels are summed, and ``conv_seg`` classifies every position
    after channel dropout (``nn.Dropout2d``, as mmsegmentation's ``BaseDecodeHead``).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        strides: Sequence[int] = (4, 8, 16, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.strides = list(strides)
        self.scale_heads = nn.ModuleList()
        for stride in self.strides:
            stages: list[nn.Module] = []
            for index in range(head_length(stride, self.strides[0])):
                width = in_channels if index == 0 else channels
                stages.append(ConvModule(width, channels, 3, norm=True, relu=True))
                if stride != self.strides[0]:
                    stages.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*stages))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        output = self.scale_heads[0](features[0])
        for head, x in zip(self.scale_heads[1:], features[1:], strict=True):
            # sizes may differ by a pixel where a level was pooled from an odd map
            output = output + F.interpolate(
                head(x), size=output.shape[-2:], mode="bilinear", align_corners=False
            )
        return self.conv_seg(self.dropout(output))


def init_semantic_fpn(neck: FPN, head: FPNHead) -> None:
    """mmsegmentation's initialization: Xavier-uniform neck, Kaiming head, N(0, 0.01) classifier."""
    for module in neck.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    for module in head.scale_heads.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.normal_(head.conv_seg.weight, std=0.01)
    nn.init.zeros_(head.conv_seg.bias)


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """``x`` (B, C, H, W) padded with zeros at the bottom and right to multiples of ``divisor``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % divisor, -width % divisor
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


# --------------------------------------------------------------------------- the model
def feature_strides(config: GFNetConfig) -> list[float]:
    """Strides of the maps the neck takes: a pyramid's stages, or s/4..2s around a flat
    model's patch stride s (4/8/16/32 for the zoo's models)."""
    first = config.patch_size if config.kind == "pyramid" else config.patch_size / 4
    return [first * 2**level for level in range(PYRAMID_LEVELS)]


def backbone_config(config: GFNetConfig) -> GFNetConfig:
    """The classifier-less GFNet a segmentation config's backbone is."""
    return config.replace(task="classification", segmentation=None, num_classes=0, class_names=None)


class GFNetForSegmentation(nn.Module):
    """A GFNet backbone with a Semantic FPN head: ``forward(x)`` gives (B, classes, H, W) logits.

    Built from a segmentation :class:`GFNetConfig` (``task="segmentation"``); ``backbone``, when
    given, is the GFNet to use (its classifier is removed, its weights kept): see
    :func:`segmentation_from_classifier`.
    """

    def __init__(self, config: GFNetConfig, *, backbone: GFNetArchitecture | None = None) -> None:
        super().__init__()
        if not config.is_segmentation:
            raise ConfigError(
                f"{config.architecture or 'this config'} describes a classification model: "
                "build it with GFNet, or pass task='segmentation'"
            )
        self.config = config
        settings: SegmentationConfig = config.segmentation  # type: ignore[assignment]
        expected = backbone_config(config)
        if backbone is None:
            backbone = GFNetArchitecture(expected, global_pool="")
        else:
            backbone.reset_classifier(0, "")
            if backbone.config != expected:
                raise ConfigError("the backbone given is not the architecture config describes")
        self.backbone = backbone
        widths = config.widths
        if config.kind == "pyramid":
            self.pyramid = None
            in_channels = list(widths)
        else:
            self.pyramid = SimpleFeaturePyramid(widths[0])
            in_channels = [widths[0]] * PYRAMID_LEVELS
        #: strides of the four maps in pixels, finest first (4/8/16/32 for the zoo's models)
        self.feature_strides = feature_strides(config)
        self.neck = FPN(in_channels, settings.neck_channels)
        self.decode_head = FPNHead(
            settings.neck_channels,
            settings.head_channels,
            config.num_classes,
            strides=self.feature_strides,
            dropout=settings.dropout,
        )
        #: a segmentation model is never cut by prune_intermediate_layers (save_model asks)
        self.pruned = False
        if not self.decode_head.conv_seg.weight.is_meta:  # see GFNet.reset_parameters
            init_semantic_fpn(self.neck, self.decode_head)

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def size_divisor(self) -> int:
        """Inputs are padded to multiples of this: the coarsest level's stride."""
        return int(self.feature_strides[-1])

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four maps the neck takes, finest first (NCHW); ``x`` divisible by the stride."""
        if self.pyramid is None:
            levels = list(range(PYRAMID_LEVELS))
            return self.backbone.forward_intermediates(
                x, indices=levels, norm=True, intermediates_only=True
            )
        (last,) = self.backbone.forward_intermediates(
            x, indices=1, norm=True, intermediates_only=True
        )
        return self.pyramid(last)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the finest level (stride 4 for the zoo's models), before upsampling."""
        return self.decode_head(self.neck(self.forward_features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits (B, num_classes, H, W) for images (B, C, H, W) of any size."""
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`forward`'s logits, and the four maps the neck took (of the padded input,
        finest first): transformers' ``hidden_states`` without a second pass."""
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_divisor)
        features = self.forward_features(padded)
        logits = F.interpolate(
            self.decode_head(self.neck(features)),
            size=padded.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        if padded.shape[-2:] != (height, width):
            logits = logits[..., :height, :width]
        return logits, features

    # ------------------------------------------------------------------ training
    def no_weight_decay(self) -> set[str]:
        """The backbone's position embedding and filters (see GFNet.no_weight_decay)."""
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's blocks in the backward pass (same gradients, less memory)."""
        self.backbone.set_grad_checkpointing(enable)

    @property
    def grad_checkpointing(self) -> bool:
        return self.backbone.grad_checkpointing

    def reset_classifier(self, num_classes: int, class_names: list[str] | None = None) -> None:
        """A fresh 1x1 classifier for ``num_classes`` classes; neck and head convs are kept."""
        if num_classes < 1:
            raise UsageError(
                "a segmentation model needs num_classes of at least 1", param="num_classes"
            )
        old = self.decode_head.conv_seg
        conv = nn.Conv2d(
            old.in_channels, num_classes, 1, device=old.weight.device, dtype=old.weight.dtype
        )
        if not conv.weight.is_meta:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.decode_head.conv_seg = conv
        self.config = self.config.replace(num_classes=num_classes, class_names=class_names)

    # ------------------------------------------------------------------ resolution
    def set_image_size(self, img_size: int | tuple[int, int]) -> None:
        """Resize the backbone's position embedding and filters to a new training crop."""
        self.backbone.set_image_size(img_size)
        self.config = self.config.replace(img_size=self.backbone.config.img_size)


def segmentation_config(
    config: GFNetConfig,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    img_size: int | tuple[int, int] | None = None,
    settings: SegmentationConfig | None = None,
) -> GFNetConfig:
    """``config`` as a segmentation model's: Semantic FPN settings, classes and crop size.

    A classification config gets PVT's head and, unless ``img_size`` is given, the 512-pixel
    training crop; a new ``num_classes`` drops class names that no longer fit.
    """
    changes: dict = {"task": "segmentation"}
    if settings is not None:
        changes["segmentation"] = settings
    elif not config.is_segmentation:
        changes["segmentation"] = SegmentationConfig()
    if img_size is not None:
        changes["img_size"] = img_size if isinstance(img_size, int) else list(img_size)
    elif not config.is_segmentation:
        changes["img_size"] = DEFAULT_CROP
    if num_classes is not None:
        changes["num_classes"] = num_classes
        if class_names is None and num_classes != config.num_classes:
            changes["class_names"] = None
    if class_names is not None:
        changes["class_names"] = list(class_names)
    return config.replace(**changes)


def segmentation_from_classifier(
    classifier: GFNetArchitecture,
    *,
    num_classes: int,
    class_names: list[str] | None = None,
    img_size: int | tuple[int, int] | None = None,
    settings: SegmentationConfig | None = None,
) -> GFNetForSegmentation:
    """A segmentation model whose backbone is ``classifier`` (weights kept, head dropped).

    The backbone's position embedding and filters are resized to the training crop
    (``img_size``, default 512: a 128x65 filter grid at stride 4 for a pyramid model) as the
    authors resize them between resolutions. ``classifier`` itself becomes the backbone.
    """
    target = segmentation_config(
        classifier.config,
        num_classes=num_classes,
        class_names=class_names,
        img_size=img_size,
        settings=settings,
    )
    at_source = target.replace(img_size=classifier.config.img_size)
    with torch.device(classifier.pos_embed.device):
        model = GFNetForSegmentation(at_source, backbone=classifier)
    model.to(dtype=classifier.pos_embed.dtype)
    if target.image_size != at_source.image_size:
        model.set_image_size(target.img_size)  # type: ignore[arg-type]
    return model.train(classifier.training)


# --------------------------------------------------------------------------- multi-GPU
def sync_batchnorm(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``model`` with its BatchNorm layers synchronized across processes where that can run.

    Converted (``nn.SyncBatchNorm.convert_sync_batchnorm``) when a process group of more than
    one process is initialized and ``device`` (default: where the model's parameters are) is
    a GPU; otherwise returned as it is: SyncBatchNorm runs on GPUs only, so processes on the
    CPU (``torchrun`` with gloo) keep per-process BatchNorm statistics. Call it before
    wrapping the model in DDP.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return model
    if torch.distributed.get_world_size() < 2:
        return model
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    if torch.device(device).type not in (*_SYNC_BN_DEVICES, _privateuse1_name()):
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _privateuse1_name() -> str:
    try:
        return torch._C._get_privateuse1_backend_name()
    except AttributeError:  # pragma: no cover - older torch
        return "privateuseone"
