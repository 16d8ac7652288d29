"""GFNet as a transformers model: the classes a MODEL folder's remote code names.

Every MODEL folder carries ``configuration_gfnet.py``, ``modeling_gfnet.py`` and
``image_processing_gfnet.py`` (:mod:`gfnet_cli.hub.remote_code`); each subclasses one class
of this module, so ``AutoModelForImageClassification.from_pretrained(repo,
trust_remote_code=True)`` runs this package's architecture and preprocessing, not a copy
(docs/transformers.md says why). The names here are a contract with every repository pushed
so far: they may gain features, never change meaning or disappear.

- :class:`GFNetConfig`: our config.json fields as a ``PreTrainedConfig``; ``num_labels`` /
  ``id2label`` are the classifier, and saving writes ``num_classes`` / ``class_names`` to match.
- :class:`GFNetForImageClassification`: the GFNet under ``.gfnet``; ``ImageClassifierOutput``
  with a loss when ``labels`` are given. Its checkpoint keys carry a ``gfnet.`` prefix when
  transformers saves it; gfnet's loader reads past it.
- :class:`GFNetImageProcessor`: the authors' evaluation transform, the same code as
  ``gfnet predict`` (:class:`~gfnet_cli.data.transforms.EvalTransform`), PIL only.
- :class:`GFNetForSemanticSegmentation`: the Semantic FPN segmentation model
  (:class:`~gfnet_cli.models.segmentation.GFNetForSegmentation`) under ``.gfnet``;
  ``SemanticSegmenterOutput`` with logits at the input's size, and the loss gfnet trains with
  when ``labels`` are given.
- :class:`GFNetSegmentationImageProcessor`: ``gfnet predict``'s whole-image transform
  (:class:`~gfnet_cli.data.segmentation.SegmentationEvalTransform`), masks for training, and
  ``post_process_semantic_segmentation`` for ``pipeline("image-segmentation")``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from gfnet_cli.errors import MissingDependencyError, UsageError, install_extra

#: The oldest transformers release the tests passed on (5.20.0 and 5.25.0 were run): v5's
#: loading (meta-device init, ``PreTrainedConfig``, ``transformers.initialization``).
MIN_TRANSFORMERS = "5.20.0"
EXTRA = "transformers"


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"5.25.0"`` -> ``(5, 25, 0)``; pre-release tails (``rc1``, ``.dev0``) are ignored."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    return tuple(int(part or 0) for part in match.groups()) if match else (0,)


def require_transformers() -> Any:
    """The ``transformers`` module, or one line naming the extra when it is missing or old."""
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("GFNet's transformers classes", EXTRA) from None
    if _version_tuple(transformers.__version__) < _version_tuple(MIN_TRANSFORMERS):
        raise TransformersVersionError(transformers.__version__)
    return transformers


class TransformersVersionError(MissingDependencyError):
    """The installed transformers is older than :data:`MIN_TRANSFORMERS`."""

    def __init__(self, found: str) -> None:
        UsageError.__init__(
            self,
            f"GFNet's transformers classes need transformers>={MIN_TRANSFORMERS}, found "
            f"{found}: {install_extra(EXTRA)} (pip install -U 'transformers>={MIN_TRANSFORMERS}')",
        )
        self.extra = EXTRA


require_transformers()

# Imported only once the version is known to be good: older releases fail on these names.
from transformers import PretrainedConfig, PreTrainedModel  # noqa: E402
from transformers import initialization as hf_init  # noqa: E402
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature  # noqa: E402
from transformers.modeling_outputs import (  # noqa: E402
    ImageClassifierOutput,
    SemanticSegmenterOutput,
)

from gfnet_cli.data.images import open_image  # noqa: E402
from gfnet_cli.data.masks import open_mask, reduce_labels  # noqa: E402
from gfnet_cli.data.segmentation import SegmentationEvalTransform  # noqa: E402
from gfnet_cli.data.transforms import EvalTransform  # noqa: E402
from gfnet_cli.models import config as gfnet_config  # noqa: E402
from gfnet_cli.models.gfnet import GFNetArchitecture  # noqa: E402
from gfnet_cli.models.layers import Block, GlobalFilter  # noqa: E402
from gfnet_cli.models.segmentation import GFNetForSegmentation  # noqa: E402
from gfnet_cli.tasks.segmentation import SEGMENTATION, resized_argmax  # noqa: E402

#: the attribute naming which of mmsegmentation's inits a segmentation conv gets
INIT_ROLE = "_gfnet_init_role"
#: our config.json fields, as the transformers config holds them (model_type is a class attribute)
FIELDS = tuple(
    f.name for f in dataclasses.fields(gfnet_config.GFNetConfig) if f.name != "model_type"
)


# ---------------------------------------------------------------------------- config
class GFNetConfig(PretrainedConfig):
    """config.json as transformers reads it: every gfnet field, plus transformers' own.

    The fields are checked by gfnet's :class:`~gfnet_cli.models.config.GFNetConfig` (one
    line naming the field, as ``gfnet`` says it). ``num_labels`` and ``id2label`` decide the
    classifier (``from_pretrained(repo, num_labels=5, ignore_mismatched_sizes=True)`` gives
    a fresh 5-class head); :meth:`to_dict` writes ``num_classes`` and ``class_names`` to match,
    so ``gfnet`` reads the same classes back.
    """

    model_type = "gfnet"

    def __init__(self, **kwargs: Any) -> None:
        ours = {name: kwargs.pop(name) for name in FIELDS if name in kwargs}
        kwargs.pop("model_type", None)
        checked = gfnet_config.GFNetConfig.from_dict(ours)
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(checked.labels))
            kwargs["label2id"] = {name: i for i, name in enumerate(checked.labels)}
        super().__init__(**kwargs)
        # a classification config has no task keys; a segmentation one its task and head
        for name, value in checked.to_dict().items():
            if name in FIELDS:
                setattr(self, name, value)

    def to_gfnet_config(self) -> gfnet_config.GFNetConfig:
        """gfnet's config for this model: our fields, the classes from ``id2label``."""
        # a classification config.json leaves out task and segmentation (their defaults)
        data = {name: getattr(self, name) for name in FIELDS if name in self.__dict__}
        data["num_classes"] = int(self.num_labels or 0)
        data["class_names"] = _class_names(self.id2label, data["num_classes"])
        return gfnet_config.GFNetConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        checked = self.to_gfnet_config()
        output["num_classes"] = checked.num_classes
        output["class_names"] = checked.class_names
        return output


def _class_names(id2label: dict | None, count: int) -> list[str] | None:
    """``id2label``'s names in class order, or ``None`` when they are placeholders
    (transformers' ``LABEL_0``..., gfnet's ``class_0``...) or do not cover the classes."""
    if not id2label or count == 0:
        return None
    names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(count)]
    placeholders = [[f"{stem}_{i}" for i in range(count)] for stem in ("LABEL", "class")]
    if not all(names) or names in placeholders:
        return None
    return names


# ---------------------------------------------------------------------------- models
class GFNetPreTrainedModel(PreTrainedModel):
    """What every GFNet model shares in transformers: the config, the weight init, the input."""

    config_class = GFNetConfig
    base_model_prefix = "gfnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        """The authors' init, for what a checkpoint did not provide (e.g. a new head).

        transformers' init functions skip every tensor that was loaded.
        """
        if isinstance(module, nn.Linear):
            hf_init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                hf_init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            hf_init.ones_(module.weight)
            hf_init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            self._init_conv(module)
        elif isinstance(module, GlobalFilter):
            hf_init.normal_(module.complex_weight, std=0.02)
        elif isinstance(module, Block) and module.gamma is not None:  # layer scale: pyramid
            hf_init.constant_(module.gamma, float(self.config.init_values))
        elif isinstance(module, GFNetArchitecture):
            hf_init.trunc_normal_(module.pos_embed, std=0.02)
        elif isinstance(module, nn.BatchNorm2d):  # the segmentation head's, running stats too
            hf_init.ones_(module.weight)
            hf_init.zeros_(module.bias)
            hf_init.zeros_(module.running_mean)
            hf_init.ones_(module.running_var)
            hf_init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.ConvTranspose2d):  # a flat model's feature pyramid
            module.reset_parameters()

    def _wants_hidden_states(self, output_hidden_states: bool | None) -> bool:
        """The call's ``output_hidden_states``, else the config's (transformers' convention)."""
        if output_hidden_states is None:
            return bool(self.config.output_hidden_states)
        return output_hidden_states

    def _init_conv(self, conv: nn.Conv2d) -> None:
        """mmsegmentation's init in a segmentation head (Xavier neck, Kaiming head, N(0, 0.01)
        classifier: :func:`~gfnet_cli.models.segmentation.init_semantic_fpn`), PyTorch's
        default elsewhere (the authors' patch embedding)."""
        role = getattr(conv, INIT_ROLE, None)
        if role == "neck":
            hf_init.xavier_uniform_(conv.weight)
        elif role == "head":
            hf_init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        elif role == "classifier":
            hf_init.normal_(conv.weight, std=0.01)
        else:
            conv.reset_parameters()
            return
        if conv.bias is not None:
            hf_init.zeros_(conv.bias)


class GFNetForImageClassification(GFNetPreTrainedModel):
    """A GFNet classifier for transformers: ``pixel_values`` in, ``ImageClassifierOutput`` out.

    ``labels`` (class indices, or floats for multi-label / regression, as ``problem_type``
    says) add the loss ``Trainer`` minimizes. ``output_hidden_states`` returns the map of every
    block (flat) or stage (pyramid), NCHW.
    """

    def __init__(self, config: GFNetConfig) -> None:
        super().__init__(config)
        architecture = config.to_gfnet_config()
        if architecture.task != "classification":
            raise ValueError(
                f"GFNetForImageClassification needs a classification config, not a "
                f"{architecture.task} one"
            )
        self.gfnet = GFNetArchitecture(architecture)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutput | tuple:
        if pixel_values is None:
            raise ValueError("GFNetForImageClassification needs pixel_values")
        output_hidden_states = self._wants_hidden_states(output_hidden_states)
        hidden_states = None
        if output_hidden_states:
            final, maps = self.gfnet.forward_intermediates(pixel_values)
            logits = self.gfnet.forward_head(final)
            hidden_states = tuple(maps)
        else:
            logits = self.gfnet(pixel_values)
        loss = self._loss(logits, labels) if labels is not None else None
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if not return_dict:
            output = (logits,) + ((hidden_states,) if hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' classification loss, by ``problem_type`` (inferred as its models do)."""
        labels = labels.to(logits.device)
        num_labels = logits.shape[-1]
        if self.config.problem_type is None:
            if num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            if num_labels == 1:
                return nn.functional.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return nn.functional.mse_loss(logits, labels.to(logits.dtype))
        if self.config.problem_type == "single_label_classification":
            return nn.functional.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class GFNetForSemanticSegmentation(GFNetPreTrainedModel):
    """GFNet with a Semantic FPN head for transformers: ``pixel_values`` in,
    ``SemanticSegmenterOutput`` out.

    The logits are at the input's own size (B, classes, H, W), as gfnet's model gives them
    (upsampled bilinearly from stride 4; SegFormer's stay at a quarter): the processor's
    ``post_process_semantic_segmentation`` resizes them to each image as ``gfnet predict``
    does. ``labels`` (B, H, W class indices, 255 ignored) add gfnet's training loss,
    cross-entropy over the labelled pixels, the logits resized to the labels first.
    ``output_hidden_states`` returns the four maps the FPN neck takes, finest first.
    """

    def __init__(self, config: GFNetConfig) -> None:
        super().__init__(config)
        architecture = config.to_gfnet_config()
        if architecture.task != "segmentation":
            raise ValueError(
                f"GFNetForSemanticSegmentation needs a segmentation config, not a "
                f"{architecture.task} one"
            )
        self.gfnet = GFNetForSegmentation(architecture)
        _mark_semantic_fpn_roles(self.gfnet)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SemanticSegmenterOutput | tuple:
        if pixel_values is None:
            raise ValueError("GFNetForSemanticSegmentation needs pixel_values")
        output_hidden_states = self._wants_hidden_states(output_hidden_states)
        logits, features = self.gfnet.forward_with_features(pixel_values)
        hidden_states = tuple(features) if output_hidden_states else None
        loss = None
        if labels is not None:
            labels = labels.to(logits.device).long()
            SEGMENTATION.check_targets(labels, self.gfnet.num_classes, "labels")
            loss = SEGMENTATION.loss(logits, labels)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if not return_dict:
            output = (logits,) + ((hidden_states,) if hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=hidden_states)


def _mark_semantic_fpn_roles(model: GFNetForSegmentation) -> None:
    """Tag the head's convolutions with the init each gets (``_init_conv`` reads the tag,
    which travels with the module through copies)."""
    head = model.decode_head
    for role, part in (("neck", model.neck), ("head", head.scale_heads)):
        for module in part.modules():
            if isinstance(module, nn.Conv2d):
                setattr(module, INIT_ROLE, role)
    setattr(head.conv_seg, INIT_ROLE, "classifier")


# ---------------------------------------------------------------------------- processor
class GFNetImageProcessor(BaseImageProcessor):
    """The authors' evaluation transform: the pixels ``gfnet predict`` feeds the model.

    Resize the shorter side to ``size["shortest_edge"]`` (``int(crop / crop_pct)``, PIL,
    ``resample``), centre-crop ``crop_size`` (offsets rounded as torchvision rounds them),
    scale to [0, 1], normalize with ``image_mean`` / ``image_std``. The stock processors
    differ by a one-pixel crop shift on many image sizes (docs/transformers.md), and their
    torchvision backend resizes differently, so there is one backend here: PIL.

    Takes PIL images, or uint8 arrays / tensors (HWC or CHW, RGB or grey).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: dict[str, int] | None = None,
        crop_size: dict[str, int] | None = None,
        resample: int = int(Image.Resampling.BICUBIC),
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.crop_size = dict(crop_size or {"height": 224, "width": 224})
        crop = min(self.crop_size["height"], self.crop_size["width"])
        self.size = dict(size or {"shortest_edge": gfnet_config.crop_size_to_resize(crop, 0.875)})
        self.resample = int(resample)
        self.image_mean = list(image_mean or gfnet_config.IMAGENET_MEAN)
        self.image_std = list(image_std or gfnet_config.IMAGENET_STD)

    def transform(self, **overrides: Any) -> EvalTransform:
        """gfnet's :class:`EvalTransform` with these settings (``overrides`` as in
        :meth:`preprocess`)."""
        unknown = sorted(
            set(overrides) - {"size", "crop_size", "resample", "image_mean", "image_std"}
        )
        if unknown:
            raise ValueError(f"GFNetImageProcessor does not take {', '.join(unknown)}")
        settings = {
            "size": self.size,
            "crop_size": self.crop_size,
            "resample": self.resample,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            **{key: value for key, value in overrides.items() if value is not None},
        }
        crop = (int(settings["crop_size"]["height"]), int(settings["crop_size"]["width"]))
        transform = EvalTransform(
            crop,
            interpolation=Image.Resampling(int(settings["resample"])).name.lower(),
            mean=settings["image_mean"],
            std=settings["image_std"],
        )
        transform.resize = int(settings["size"]["shortest_edge"])  # as saved, not recomputed
        return transform

    def preprocess(
        self, images: Any, return_tensors: str | None = None, **overrides: Any
    ) -> BatchFeature:
        """``{"pixel_values": (N, 3, H, W)}`` for one image or a list of them."""
        transform = self.transform(**overrides)
        batch = images if isinstance(images, (list, tuple)) else [images]
        pixels = torch.stack([transform(_to_pil(image)) for image in batch])
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        data = pixels if return_tensors == "pt" else pixels.numpy()
        return BatchFeature({"pixel_values": data}, tensor_type=return_tensors)


def _to_pil(image: Any) -> Image.Image:
    """An RGB PIL image from what the processor takes, decoded as ``gfnet predict`` does."""
    if isinstance(image, Image.Image):
        return open_image(image)
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(
            f"GFNet's image processors take PIL images or uint8 arrays, got {array.dtype} values"
        )
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(
            f"GFNet's image processors take RGB or grey images, got shape {array.shape}"
        )
    return open_image(Image.fromarray(array))


class GFNetSegmentationImageProcessor(BaseImageProcessor):
    """``gfnet predict``'s whole-image segmentation transform, masks, and post-processing.

    Images: the shorter side resized to ``size["shortest_edge"]`` (aspect kept, PIL bilinear),
    scaled to [0, 1], normalized with ``image_mean`` / ``image_std``: the code of
    :class:`~gfnet_cli.data.segmentation.SegmentationEvalTransform`, so ``pipeline`` masks are
    ``gfnet predict``'s. Images of different aspect ratios give differently sized pixels:
    pass them one at a time (as ``pipeline`` does) or resize them to one size first.

    ``segmentation_maps`` (PIL masks or integer arrays of class indices, 255 ignored) come
    back as ``labels`` (long), resized (nearest) to their image's pixels, ADE20K's 0 dropped
    when ``do_reduce_labels``: what ``GFNetForSemanticSegmentation`` takes for its loss.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: dict[str, int] | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        do_reduce_labels: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.size = dict(size or {"shortest_edge": 512})
        self.image_mean = list(image_mean or gfnet_config.IMAGENET_MEAN)
        self.image_std = list(image_std or gfnet_config.IMAGENET_STD)
        self.do_reduce_labels = bool(do_reduce_labels)

    def transform(self, size: dict[str, int] | None = None) -> SegmentationEvalTransform:
        """gfnet's :class:`SegmentationEvalTransform` with these settings."""
        shortest = int((size or self.size)["shortest_edge"])
        return SegmentationEvalTransform(shortest, self.image_mean, self.image_std)

    def preprocess(
        self,
        images: Any,
        segmentation_maps: Any = None,
        return_tensors: str | None = None,
        size: dict[str, int] | None = None,
        do_reduce_labels: bool | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """``{"pixel_values": (N, 3, H, W)}``, and ``"labels"`` (N, H, W) for masks."""
        if kwargs:
            raise ValueError(
                f"GFNetSegmentationImageProcessor does not take {', '.join(sorted(kwargs))}"
            )
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        transform = self.transform(size)
        batch = _as_list(images)
        pixels = [transform.image(_to_pil(image)) for image in batch]
        data = {"pixel_values": _stack(pixels, "pixel_values")}
        if segmentation_maps is not None:
            masks = _as_list(segmentation_maps)
            if len(masks) != len(batch):
                raise ValueError(f"{len(batch)} images but {len(masks)} segmentation_maps")
            reduce = self.do_reduce_labels if do_reduce_labels is None else do_reduce_labels
            labels = [
                _mask_labels(mask, tuple(pixel.shape[-2:]), reduce=reduce)
                for mask, pixel in zip(masks, pixels, strict=True)
            ]
            data["labels"] = _stack(labels, "labels")
        if return_tensors != "pt":
            data = {key: value.numpy() for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: list[tuple[int, int]] | None = None
    ) -> list[torch.Tensor]:
        """One (H, W) class map per image: the logits resized (bilinear) to ``target_sizes``
        (each image's (height, width)) and arg-maxed, as ``gfnet predict`` makes its masks;
        without ``target_sizes``, at the logits' size."""
        logits = outputs.logits
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(f"{len(logits)} logits but {len(target_sizes)} target_sizes")
        maps = []
        for index in range(len(logits)):
            single = logits[index : index + 1].float()
            if target_sizes is not None:
                height, width = (int(value) for value in target_sizes[index])
                maps.append(resized_argmax(single, (height, width))[0])
            else:
                maps.append(single.argmax(dim=1)[0])
        return maps


def _as_list(items: Any) -> list[Any]:
    return list(items) if isinstance(items, (list, tuple)) else [items]


def _stack(tensors: list[torch.Tensor], name: str) -> torch.Tensor:
    shapes = sorted({tuple(tensor.shape) for tensor in tensors})
    if len(shapes) > 1:
        raise ValueError(
            f"the images give {name} of different sizes ({shapes[0]} and {shapes[-1]}): "
            "pass images of one aspect ratio together, or one at a time"
        )
    return torch.stack(tensors)


def _mask_labels(mask: Any, size: tuple[int, int], *, reduce: bool) -> torch.Tensor:
    """A mask's class indices as long labels at ``size`` (height, width), nearest resampling
    as gfnet's training resizes masks; ADE20K's 0 ignored when ``reduce``."""
    if isinstance(mask, Image.Image):
        values = open_mask(mask)
    else:
        values = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if values.ndim != 2 or values.dtype.kind not in "iub":
            raise ValueError(
                f"segmentation_maps are (H, W) integer masks, got {values.dtype} of shape "
                f"{values.shape}"
            )
    if reduce:
        values = reduce_labels(values)
    height, width = size
    if values.shape != (height, width):
        image = Image.fromarray(values.astype(np.int32), mode="I")
        values = np.asarray(image.resize((width, height), Image.Resampling.NEAREST))
    return torch.from_numpy(values.astype(np.int64))
