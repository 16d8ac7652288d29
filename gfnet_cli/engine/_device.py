"""Model set-up shared by predict and evaluate: MODEL at ``--img-size`` on ``--device``.

Devices and precision themselves live in :mod:`gfnet_cli.device`.
"""

from __future__ import annotations

import torch

from gfnet_cli.errors import UsageError
from gfnet_cli.models.config import to_pair
from gfnet_cli.models.gfnet import GFNet


def prepare_model(
    model: str | GFNet, img_size: int | tuple[int, int] | None, device: torch.device
) -> GFNet:
    """Load MODEL at ``img_size`` on ``device`` in eval mode (a given model is not resized).

    A loaded :class:`GFNet` accepts any valid size at run time (its filters are resized and
    cached per size), so a caller's model is used as is rather than changed.
    """
    if isinstance(model, GFNet):
        if img_size is not None:
            model.config.check_image_size(_size(img_size))
        return model.eval().to(device)
    from gfnet_cli.models.factory import load_model

    if img_size is None:
        return load_model(str(model), device=device)
    size = _size(img_size)
    net = load_model(str(model), device=device)
    net.config.check_image_size(size)  # a clear message before any resizing
    if size != net.config.image_size:
        net.set_image_size(img_size)
    return net


def _size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    size = to_pair(img_size)
    if min(size) <= 0:
        raise UsageError(f"--img-size must be positive, got {img_size}")
    return size
