"""What the global filters learned: the paper's Figure 5 for any MODEL.

Each block's global filter multiplies the 2-D spectrum of its token grid by a learned complex
filter ``W`` (``complex_weight``: the half-spectrum of a rows x cols grid, (rows, cols//2+1, C)
as real and imaginary parts)::

    y = irfft2(rfft2(x, norm="ortho") * W, norm="ortho")  =  x (*) k,   k = irfft2(W)

that is, a circular convolution of every channel with the spatial kernel ``k`` (the inverse
transform with the default "backward" norm; the two ortho factors cancel). Two views per layer:

- **frequency**: ``|fft2(k)|``, the magnitude of the full rows x cols spectrum the layer
  applies, centred with ``fftshift`` (zero frequency in the middle). It equals ``|W|`` completed
  by Hermitian symmetry (``W[-u, -v] = conj(W[u, v])``), except in the columns the inverse real
  FFT forces to be Hermitian (zero frequency, and Nyquist for even widths), where it shows what
  the layer really applies: the Hermitian part of ``W`` there.
- **spatial**: ``k`` itself, centred with ``fftshift`` (the kernel's origin in the middle).

Summary figures per layer (all channels): the share of the filter's energy ``|W|^2`` at low
frequencies (radius at most ``LOW_FREQUENCY_RADIUS`` cycles per token, half the Nyquist
frequency), beside the share a flat filter would have on the same grid; the spectral centroid
(energy-weighted mean radius); and the peak of the channel-mean magnitude.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gfnet_cli.analysis.outputs import require_matplotlib
from gfnet_cli.engine.inference import check_at_least, model_name, prepare_model
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.serialization import check_output_file
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.models.layers import GlobalFilter
from gfnet_cli.models.segmentation import GFNetForSegmentation

logger = logging.getLogger(__name__)

DEFAULT_CHANNELS = 6  # the paper's Figure 5 shows the spatial filters of six channels
LOW_FREQUENCY_RADIUS = 0.25  # cycles per token: half the Nyquist frequency
SCALES = ("panel", "layer")  # one colour scale per panel, or one per layer's row


@dataclass
class LayerFilters:
    """One layer's global filter in both views, every channel: (C, rows, cols) arrays."""

    layer: int  # 1-based, counted through the whole network
    stage: int  # 1-based; flat models have one stage
    parameter: str  # the state-dict name of complex_weight
    grid: tuple[int, int]
    frequency: np.ndarray  # |spectrum|, centred (zero frequency at [rows//2, cols//2])
    spatial: np.ndarray  # the convolution kernel, centred (origin at [rows//2, cols//2])

    @property
    def channels(self) -> int:
        return int(self.frequency.shape[0])

    def _radius(self) -> np.ndarray:
        rows, cols = self.grid
        fy = np.fft.fftshift(np.fft.fftfreq(rows))[:, None]
        fx = np.fft.fftshift(np.fft.fftfreq(cols))[None, :]
        return np.sqrt(fy**2 + fx**2)

    def stats(self) -> dict[str, Any]:
        """Which frequencies dominate: low-frequency energy share, centroid, peak."""
        radius = self._radius()
        energy = (self.frequency.astype(np.float64) ** 2).sum(axis=0)
        total = float(energy.sum())
        low = radius <= LOW_FREQUENCY_RADIUS + 1e-9
        mean_magnitude = self.frequency.mean(axis=0)
        peak_row, peak_col = np.unravel_index(int(np.argmax(mean_magnitude)), mean_magnitude.shape)
        rows, cols = self.grid
        fy, fx = (peak_row - rows // 2) / rows, (peak_col - cols // 2) / cols
        if fx < 0 or (fx == 0 and fy < 0):  # |W| is symmetric: name the half with fx >= 0
            fy, fx = -fy, -fx
        return {
            "low_frequency_energy": float(energy[low].sum() / total) if total > 0 else None,
            "flat_low_frequency_energy": float(low.mean()),
            "spectral_centroid": float((energy * radius).sum() / total) if total > 0 else None,
            "peak_frequency": [_clean(fy), _clean(fx)],
            "peak_radius": _clean(math.hypot(fy, fx)),
            "mean_magnitude": float(self.frequency.mean()),
            "zero_frequency_gain": float(mean_magnitude[rows // 2, cols // 2]),
        }

    def summary(self) -> dict[str, Any]:
        rows, cols = self.grid
        return {
            "layer": self.layer,
            "stage": self.stage,
            "parameter": self.parameter,
            "grid": [rows, cols],
            "channels": self.channels,
            "shape": [rows, cols // 2 + 1, self.channels, 2],
            **self.stats(),
        }


@dataclass
class FilterResult:
    """Every selected layer's filters, and where the figure and arrays were written."""

    model: str
    kind: str
    img_size: list[int]
    layers: list[LayerFilters]
    channels_shown: int = DEFAULT_CHANNELS
    output: Path | None = None
    data: Path | None = None
    num_layers: int = 0  # in the model, selected or not
    low_frequency_radius: float = LOW_FREQUENCY_RADIUS

    def summary(self) -> dict[str, Any]:
        """The ``visualize --json`` document."""
        return {
            "model": self.model,
            "kind": self.kind,
            "img_size": self.img_size,
            "num_layers": self.num_layers,
            "low_frequency_radius": self.low_frequency_radius,
            "channels_shown": self.channels_shown,
            "output": str(self.output) if self.output else None,
            "data": str(self.data) if self.data else None,
            "layers": [layer.summary() for layer in self.layers],
        }

    def to_dict(self) -> dict[str, Any]:
        return self.summary()

    def save_arrays(self, path: str | Path) -> Path:
        """Write both views of every selected layer as safetensors (float32, (C, rows, cols)).

        Keys: ``<parameter prefix>.frequency`` and ``.spatial`` (``blocks.3.filter.frequency``);
        the metadata's ``layers`` holds the JSON summary of each, ``layout`` the conventions.
        """
        from gfnet_cli.hub.serialization import save_weights

        tensors: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            prefix = layer.parameter.removesuffix(".complex_weight")
            tensors[f"{prefix}.frequency"] = torch.from_numpy(layer.frequency)
            tensors[f"{prefix}.spatial"] = torch.from_numpy(layer.spatial)
        metadata = {
            "model": self.model,
            "layers": json.dumps([layer.summary() for layer in self.layers]),
            "layout": "(channels, rows, cols), fftshift-centred: frequency = |fft2(k)| with "
            "zero frequency at [rows//2, cols//2]; spatial = k = irfft2(complex_weight) with "
            "its origin at [rows//2, cols//2]",
        }
        path = Path(path)
        save_weights(tensors, path, metadata)
        return path


def filters(
    model: str | GFNetArchitecture,
    *,
    layers: str | Sequence[int] | None = None,
    channels: int = DEFAULT_CHANNELS,
    output: str | Path | None = None,
    data: str | Path | None = None,
    overwrite: bool = False,
    scale: str = "panel",
) -> FilterResult:
    """The global filters of ``model`` in the frequency and the spatial domain.

    ``layers``: ``None``/``"all"``, or 1-based layer numbers (``"1,4-6"`` or a list).
    ``output``: a PNG laid out like the paper's Figure 5 (needs the ``plot`` extra): per layer,
    the channel-mean and the first ``channels`` frequency responses, and those channels'
    spatial kernels; pyramid models one section per stage. ``scale``: ``"panel"`` (one colour
    scale per panel) or ``"layer"`` (each layer's row scaled to its own range).
    ``data``: a safetensors file with both views of every channel of the selected layers.
    """
    check_at_least("channels", channels, 1)
    if scale not in SCALES:
        raise UsageError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}", param="scale")
    output_path = check_output_file(output, "output", overwrite=overwrite, suffixes=(".png",))
    data_path = check_output_file(data, "data", overwrite=overwrite, suffixes=(".safetensors",))
    if output_path is not None and data_path is not None and output_path == data_path:
        raise UsageError("output and data name the same file", param=("data", "output"))
    if output_path is not None:
        require_matplotlib("drawing the filters (output)")
    # a caller's model is read where it is (weights are copied to the CPU), never moved
    cpu = torch.device("cpu")
    given = isinstance(model, (GFNetArchitecture, GFNetForSegmentation))
    net = model if given else prepare_model(model, None, cpu)
    modules = filter_modules(net)
    chosen = parse_layers(layers, len(modules))
    result = FilterResult(
        model=model_name(model),
        kind=net.config.kind,
        img_size=list(net.config.image_size),
        layers=[layer_filters(number, *modules[number - 1]) for number in chosen],
        channels_shown=channels,
        num_layers=len(modules),
    )
    if data_path is not None:
        result.data = result.save_arrays(data_path)
    if output_path is not None:
        from gfnet_cli.analysis.plots import plot_filters

        result.output = plot_filters(result, output_path, channels=channels, scale=scale)
    return result


def filter_modules(net: GFNetArchitecture | GFNetForSegmentation
                   ) -> list[tuple[int, str, GlobalFilter]]:  # fmt: skip
    """``(stage, parameter name, module)`` of every global filter, in network order (a
    segmentation model's are its backbone's: ``backbone.blocks...``)."""
    found = []
    for name, module in net.named_modules():
        if isinstance(module, GlobalFilter):
            parts = name.split(".")
            stage = 1
            if net.config.kind == "pyramid":  # blocks.<stage>.<block>...
                stage = int(parts[parts.index("blocks") + 1]) + 1
            found.append((stage, f"{name}.complex_weight", module))
    return found


def layer_filters(number: int, stage: int, parameter: str, module: GlobalFilter) -> LayerFilters:
    """Both views of one module's filter (see the module docstring for the exact operator)."""
    with torch.no_grad():
        grid = tuple(module.grid)
        weight = module.complex_weight.detach().to("cpu", torch.float32).contiguous()
        weight = torch.view_as_complex(weight)
        kernel = torch.fft.irfft2(weight.permute(2, 0, 1), s=grid)  # (C, rows, cols)
        spectrum = torch.fft.fft2(kernel).abs()
        dims = (-2, -1)
        return LayerFilters(
            layer=number,
            stage=stage,
            parameter=parameter,
            grid=(int(grid[0]), int(grid[1])),
            frequency=torch.fft.fftshift(spectrum, dim=dims).numpy().astype(np.float32),
            spatial=torch.fft.fftshift(kernel, dim=dims).numpy().astype(np.float32),
        )


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_layers(layers: str | Sequence[int] | None, count: int) -> list[int]:
    """1-based layer numbers from ``"all"``, ``"1,3-5"`` or a list; refused when out of range."""
    if count == 0:
        raise UsageError("the model has no global filters (depth 0)")
    if layers is None or (isinstance(layers, str) and layers.strip().lower() in ("", "all")):
        return list(range(1, count + 1))
    numbers: list[int] = []
    if isinstance(layers, str):
        for part in layers.split(","):
            match = _RANGE.match(part)
            if match is None:
                raise UsageError(
                    f"layers must be all or numbers and ranges like 1,3-5, got {layers!r}",
                    param="layers",
                )
            first, last = int(match[1]), int(match[2] or match[1])
            if first > last:
                raise UsageError(f"layers: range {part.strip()} is backwards", param="layers")
            numbers.extend(range(first, last + 1))
    else:
        numbers = [int(n) for n in layers]
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad or not numbers:
        raise UsageError(
            f"layers must be numbers from 1 to {count} (the model's depth), got {layers!r}",
            param="layers",
        )
    return sorted(set(numbers))


def _clean(value: float) -> float:
    return round(float(value), 6) + 0.0  # -0.0 -> 0.0

