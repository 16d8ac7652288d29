"""Counting GFLOPs the way the paper does.

Convention (the paper's Table 1 and the authors' README, as fvcore counts): one
multiply-accumulate is one FLOP. Counted are matrix products and convolutions (PyTorch's
``FlopCounterMode`` formulas, halved to MACs), each 2D FFT of the global filter at
``H*W*C*log2(H*W)`` (forward and inverse alike), and the filter's complex product at one MAC
per token and channel (the paper's ``HWD`` term). Norms, activations, additions, pooling and
interpolation are not counted. A segmentation model is counted whole, backbone and Semantic
FPN head (its convolutions and transposed convolutions), at the input size given.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.factory import build_model
from gfnet_cli.models.layers import fused_inference


def _fft_flops(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """FLOPs (2x MACs, FlopCounterMode's unit) of an N-d real<->complex FFT."""
    tensor = args[0]
    dims = args[1]
    if tensor.is_complex():  # inverse: the real output gives the full grid
        shape = out_val.shape
    else:
        shape = tensor.shape
    points = math.prod(shape[d] for d in dims)
    channels = math.prod(shape) // points
    return int(round(2 * channels * points * math.log2(points))) if points > 1 else 0


def _complex_mul_flops(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """The filter's complex product: one MAC per token of the full grid and channel."""
    if not isinstance(out_val, torch.Tensor) or not out_val.is_complex():
        return 0
    # The product runs over the half-spectrum (h, w//2+1); the paper counts H*W*D.
    if out_val.ndim < 3:
        return 0
    *batch, rows, half_cols, channels = out_val.shape
    cols = 2 * (half_cols - 1)
    return 2 * math.prod(batch) * rows * cols * channels


for _formula in (_fft_flops, _complex_mul_flops):
    _formula._get_raw = True  # type: ignore[attr-defined]

_CUSTOM = {
    torch.ops.aten._fft_r2c: _fft_flops,
    torch.ops.aten._fft_c2r: _fft_flops,
    torch.ops.aten.mul: _complex_mul_flops,
}


def count_flops(model: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``inputs`` (all images).

    The plain path is forced while counting: the fused CPU kernels are invisible to
    ``FlopCounterMode``, and the paper's convention counts the FFTs, not matrix products.
    """
    with torch.no_grad(), fused_inference(False):
        counter = FlopCounterMode(display=False, custom_mapping=_CUSTOM)
        with counter:
            model(inputs)
    return counter.get_total_flops() // 2


def model_gflops(
    model: nn.Module, image_size: tuple[int, int], in_chans: int = 3, batch_size: int = 1
) -> float:
    """GFLOPs (GMACs) per image at ``image_size``, counted on the meta device (no compute)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = torch.zeros(batch_size, in_chans, *image_size, device=device)
    try:
        macs = count_flops(model, inputs)
    finally:
        model.train(was_training)
    return macs / batch_size / 1e9


def config_gflops(config: GFNetConfig, image_size: tuple[int, int] | None = None) -> float:
    """GFLOPs of a GFNet architecture (either task) at ``image_size``, no weights allocated."""
    size = image_size or config.image_size
    with torch.device("meta"):
        model = build_model(config)
    model.eval()
    inputs = torch.zeros(1, config.in_chans, *size, device="meta")
    return count_flops(model, inputs) / 1e9
