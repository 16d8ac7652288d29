"""Inference speed: this project's GFNet against a reference written like the paper's listing.

Not part of the test run. Builds GFNet-XS (or ``--model``) with random weights, loads the same
weights into a straightforward reference GFNet defined below (the authors' style: tokens as
(B, N, C), a view to (B, a, b, C) around ``rfft2``/``irfft2``, separate ``nn.Linear``, ``nn.GELU``
and ``nn.Linear`` in the MLP), checks that the logits agree, then times both interleaved in the
same process (warm-up, then alternating repeats) and prints medians, images/s and ratios.

    PYTHONPATH=. python benchmarks/bench_inference.py --batch-size 32 --repeats 10
"""

from __future__ import annotations

import math

import torch
from torch import nn


# --------------------------------------------------------------------------- the reference
class RefGlobalFilter(nn.Module):
    def __init__(self, dim: int, h: int = 14, w: int = 8) -> None:
        super().__init__()
        self.complex_weight = nn.Parameter(torch.randn(h, w, dim, 2) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = x.shape
        a = b = int(math.sqrt(tokens))
        x = x.view(batch, a, b, channels).to(torch.float32)
        x = torch.fft.rfft2(x, dim=(1, 2), norm="ortho")
        x = x * torch.view_as_complex(self.complex_weight)
        x = torch.fft.irfft2(x, s=(a, b), dim=(1, 2), norm="ortho")
        return x.reshape(batch, tokens, channels)


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, h: int, w: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = RefGlobalFilter(dim, h, w)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMlp(dim, dim * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm2(self.filter(self.norm1(x))))


class RefPatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class RefGFNet(nn.Module):
    """The flat GFNet as the paper's code writes it (state-dict keys are the same)."""

    def __init__(self, img_size: int, patch: int, dim: int, depth: int, classes: int) -> None:
        super().__init__()
        grid = img_size // patch
        self.patch_embed = RefPatchEmbed(dim, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, dim))
        self.blocks = nn.ModuleList(RefBlock(dim, grid, grid // 2 + 1) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))


def reference_for(model: nn.Module) -> RefGFNet:
    """A reference GFNet holding exactly ``model``'s weights."""
    config = model.config
    ref = RefGFNet(
        config.image_size[0],
        config.patch_size,
        config.widths[0],
        config.depths[0],
        config.num_classes,
    )
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref.eval()
