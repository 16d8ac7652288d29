"""GFNet as a backbone: which feature maps a model offers, and a module that returns them.

timm's conventions, so detection and segmentation code written for timm backbones works:

- every GFNet lists its feature maps in ``model.feature_info`` (one dict per map:
  ``num_chs``, ``reduction`` (the stride in pixels), ``module``): the four stages of a pyramid
  model at strides 4/8/16/32, every block of a flat model at the patch stride;
- ``model.forward_intermediates(x, indices=...)`` returns the chosen maps;
- :class:`FeatureExtractor` (``create_model(name, features_only=True, out_indices=...)``)
  is a module whose forward returns those maps as a list of NCHW tensors and whose
  ``feature_info`` describes them (``.channels()``, ``.reduction()``, ``.module_name()``).

Indices follow timm: ``None`` takes every map, an int ``n`` the last ``n``, a sequence the
maps at those positions (negative counts from the end).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from gfnet_cli.errors import UsageError

Indices = int | Sequence[int] | None
OUTPUT_FORMATS = ("NCHW", "NHWC", "NLC")
FEATURE_KEYS = ("num_chs", "reduction", "module")


class FeatureIndexError(UsageError, ValueError):
    """Feature indices outside the maps a model has; the message gives the valid range.

    A :class:`ValueError` for Python callers, a usage error (exit 2) on the command line.
    """


def feature_take_indices(
    num_features: int, indices: Indices = None, *, param: str = "indices"
) -> tuple[list[int], int]:
    """The absolute positions ``indices`` selects among ``num_features`` maps, and the largest.

    timm's ``feature_take_indices``: ``None`` -> all, an int ``n`` -> the last ``n``, a
    sequence -> those positions (negative ones count from the end), sorted: a forward pass
    produces the maps in depth order.
    """
    if num_features < 1:
        raise FeatureIndexError("this model has no feature maps to take (depth 0)", param=param)
    if indices is None:
        indices = num_features
    if isinstance(indices, (bool, str)) or not isinstance(indices, (int, Sequence)):
        raise FeatureIndexError(
            f"{param} must be an int (the last n maps) or a sequence of indices, got {indices!r}",
            param=param,
        )
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise FeatureIndexError(
                f"{param}={indices} asks for the last {indices} of {num_features} feature maps: "
                f"choose 1 to {num_features}",
                param=param,
            )
        taken = list(range(num_features - indices, num_features))
        return taken, taken[-1]
    taken = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise FeatureIndexError(f"{param} holds {index!r}, not an int", param=param)
        absolute = num_features + index if index < 0 else index
        if not 0 <= absolute < num_features:
            raise FeatureIndexError(
                f"{param} {index} is out of range: this model has {num_features} feature maps, "
                f"valid indices are 0 to {num_features - 1} (or -{num_features} to -1)",
                param=param,
            )
        taken.append(absolute)
    if not taken:
        raise FeatureIndexError(f"{param} selects no feature map", param=param)
    if len(set(taken)) != len(taken):
        raise FeatureIndexError(f"{param} names a feature map twice: {list(indices)}", param=param)
    taken.sort()  # maps come out in depth order, whatever order they were asked in
    return taken, taken[-1]


def check_output_format(output_fmt: str) -> str:
    if output_fmt not in OUTPUT_FORMATS:
        raise UsageError(
            f"output_fmt must be one of {', '.join(OUTPUT_FORMATS)}, got {output_fmt!r}",
            param="output_fmt",
        )
    return output_fmt


def to_format(grid: torch.Tensor, output_fmt: str) -> torch.Tensor:
    """A (B, H, W, C) grid as ``output_fmt``: NCHW (a permuted view), NHWC, or NLC tokens."""
    if output_fmt == "NCHW":
        return grid.permute(0, 3, 1, 2)
    if output_fmt == "NLC":
        return grid.flatten(1, 2)
    return grid


class FeatureInfo:
    """The feature maps a :class:`FeatureExtractor` returns, one dict per map, in output order.

    timm's accessors: ``channels()``, ``reduction()``, ``module_name()``, ``get(key)``,
    ``get_dicts()``; ``out_indices`` are the maps' positions among all the model offers.
    Unlike timm, indexing and ``len`` see the returned maps only: ``feature_info[i]`` describes
    ``features[i]``.
    """

    def __init__(self, info: Sequence[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(entry) for entry in info]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [entry[key] for entry in self.info]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        def pick(entry: dict[str, Any]) -> dict[str, Any]:
            return dict(entry) if keys is None else {k: entry[k] for k in keys}

        if isinstance(idx, int):
            return pick(self.info[idx])
        chosen = self.info if idx is None else [self.info[i] for i in idx]
        return [pick(entry) for entry in chosen]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info})"


class FeatureExtractor(nn.Module):
    """A backbone: ``forward(x)`` returns the chosen feature maps as a list of NCHW tensors.

    Wraps a GFNet (kept as ``.model``) and prunes what the maps do not need (later blocks,
    the classifier, the final norm unless ``norm``), so every parameter gets a gradient (DDP
    needs that). Load weights into the model before wrapping it: ``create_model(name,
    pretrained=True, features_only=True)`` or ``FeatureExtractor(load_model(folder))``.

    ``out_indices``: default every stage of a pyramid model, the last three blocks of a flat
    one. ``norm=True`` applies the model's final norm to the maps it suits (every block of a
    flat model, the last stage of a pyramid model). The maps are NCHW tensors in channels-last
    memory (permuted views; convolutions take them as they are, ``.contiguous()`` copies).
    """

    def __init__(self, model: nn.Module, out_indices: Indices = None, *, norm: bool = False):
        super().__init__()
        if out_indices is None:
            out_indices = model.default_out_indices
        wanted, _ = feature_take_indices(len(model.blocks), out_indices, param="out_indices")
        taken = model.prune_intermediate_layers(wanted, prune_norm=not norm, prune_head=True)
        self.model = model
        self.out_indices = tuple(taken)
        self.norm = norm
        self.feature_info = FeatureInfo(
            [{**model.feature_info[i], "index": i} for i in taken], taken
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            x, indices=list(self.out_indices), norm=self.norm, intermediates_only=True
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (same gradients, less memory)."""
        self.model.set_grad_checkpointing(enable)

    @property
    def grad_checkpointing(self) -> bool:
        return self.model.grad_checkpointing

    @property
    def config(self) -> Any:
        """The wrapped model's config (preprocessing: mean, std, image size)."""
        return self.model.config


def features_only_model(model: nn.Module, features_only: bool, out_indices: Indices) -> nn.Module:
    """``model`` itself, or its :class:`FeatureExtractor` when ``features_only``."""
    if features_only:
        return FeatureExtractor(model, out_indices)
    if out_indices is not None:
        raise UsageError(
            "out_indices chooses the maps of a features_only model: pass features_only=True",
            param=("out_indices", "features_only"),
        )
    return model
