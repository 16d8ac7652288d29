"""The GFNet family: flat (GFNet-Ti/XS/S/B) and pyramid (GFNet-H-Ti/S/B) models.

Parameter names and shapes are exactly the authors', so their checkpoints load with
``strict=True``. Unlike the authors' models these accept any input whose height and width the
patching divides; the position embedding and the filters are resized for other sizes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.layers import (
    Block,
    DownLayer,
    GlobalFilter,
    PatchEmbed,
    _PerSizeCache,
    resize_filter,
    resize_pos_embed,
)


class GFNet(nn.Module):
    """A Global Filter Network built from a :class:`GFNetConfig` (flat or pyramid).

    The plain architecture: it knows nothing of files or the Hub. ``gfnet_cli.GFNet``
    (:class:`gfnet_cli.hub.GFNet`) adds ``from_pretrained`` / ``save_pretrained`` /
    ``push_to_hub`` on top.
    """

    def __init__(self, config: GFNetConfig) -> None:
        super().__init__()
        self.config = config
        widths, depths, ratios = config.widths, config.depths, config.mlp_ratios
        grids = config.grid_sizes()
        self.grid = grids[0]
        self.num_classes = config.num_classes
        self.num_features = widths[-1]
        drop_path_rates = torch.linspace(
            0, config.drop_path_rate, sum(depths), device="cpu"
        ).tolist()

        self.pos_embed = nn.Parameter(torch.zeros(1, grids[0][0] * grids[0][1], widths[0]))
        self.pos_drop = nn.Dropout(config.drop_rate)
        self._pos_cache = _PerSizeCache()

        stem = PatchEmbed(config.in_chans, widths[0], config.patch_size)
        if config.kind == "flat":
            self.patch_embed = stem
            self.blocks = nn.ModuleList(
                Block(widths[0], grids[0], ratios[0], config.drop_rate, rate)
                for rate in drop_path_rates
            )
        else:
            self.patch_embed = nn.ModuleList(
                [stem] + [DownLayer(widths[i], widths[i + 1]) for i in range(len(widths) - 1)]
            )
            self.blocks = nn.ModuleList()
            start = 0
            for stage, depth in enumerate(depths):
                rates = drop_path_rates[start : start + depth]
                start += depth
                self.blocks.append(
                    nn.Sequential(
                        *(
                            Block(
                                widths[stage],
                                grids[stage],
                                ratios[stage],
                                config.drop_rate,
                                rate,
                                config.init_values,
                            )
                            for rate in rates
                        )
                    )
                )
        self.norm = nn.LayerNorm(widths[-1], eps=1e-6)
        self.grad_checkpointing = False
        self.head = (
            nn.Linear(widths[-1], config.num_classes) if config.num_classes else nn.Identity()
        )
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """The authors' initialization: truncated normal (std 0.02) for linears and pos_embed.

        A model on the meta device (built to receive loaded weights) has no values to draw,
        and random ops on meta tensors make PyTorch import its symbolic-shape and compiler
        machinery, most of a second of every ``load_model``; so it is skipped there.
        """
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def reset_classifier(self, num_classes: int, class_names: list[str] | None = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` classes."""
        device = self.norm.weight.device
        self.head = (
            nn.Linear(self.num_features, num_classes).to(device) if num_classes else nn.Identity()
        )
        if num_classes:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        self.num_classes = num_classes
        self.config = self.config.replace(num_classes=num_classes, class_names=class_names)

    # ------------------------------------------------------------------ training
    def no_weight_decay(self) -> set[str]:
        """Names of the parameters AdamW must not decay, besides every 1-D one (timm's rule).

        The position embedding and the global filters: decaying a filter pulls it toward the
        all-zero filter, after which its block mixes no tokens (docs/training.md).
        """
        return {
            name
            for name, _ in self.named_parameters()
            if name == "pos_embed" or name.endswith("filter.complex_weight")
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them.

        Training memory then grows with one block's activations instead of all of them, at
        the cost of a second forward per block; the gradients are the same (the RNG of
        drop-path is replayed). Inference and ``torch.no_grad`` are unaffected.
        """
        self.grad_checkpointing = bool(enable)

    def _run_blocks(self, blocks: nn.Module, x: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    # ------------------------------------------------------------------ forward
    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding as a (1, rows, cols, C) grid, resized for other inputs."""
        if tuple(grid) == self.grid:
            pos = self.pos_embed
        else:
            pos = self._pos_cache.get(
                self.pos_embed,
                tuple(grid),
                lambda: resize_pos_embed(self.pos_embed, self.grid, grid),
            )
        return pos.reshape(1, grid[0], grid[1], -1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, C) before the classifier."""
        self.config.check_image_size((x.shape[-2], x.shape[-1]))
        if self.config.kind == "flat":
            x = self.patch_embed(x)
            x = self.pos_drop(x + self.position_embedding(x.shape[1:3]))
            x = self._run_blocks(self.blocks, x)
        else:
            stages = zip(self.patch_embed, self.blocks, strict=True)
            for stage, (embed, blocks) in enumerate(stages):
                x = embed(x)
                if stage == 0:
                    x = self.pos_drop(x + self.position_embedding(x.shape[1:3]))
                x = self._run_blocks(blocks, x)
        return self.norm(x).mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    # ------------------------------------------------------------------ resolution
    def set_image_size(self, img_size: int | tuple[int, int]) -> None:
        """Move the model to a new native resolution, resizing weights as the authors do.

        After this, ``state_dict()`` holds the resized position embedding and filters, and
        ``config.img_size`` is the new size.
        """
        new_config = self.config.replace(
            img_size=img_size if isinstance(img_size, int) else list(img_size)
        )
        old_grids, new_grids = self.config.grid_sizes(), new_config.grid_sizes()
        with torch.no_grad():
            self.pos_embed = nn.Parameter(
                resize_pos_embed(self.pos_embed.data, old_grids[0], new_grids[0])
            )
            for module in self.modules():
                if isinstance(module, GlobalFilter):
                    stage = old_grids.index(module.grid)
                    grid = new_grids[stage]
                    module.complex_weight = nn.Parameter(
                        resize_filter(module.complex_weight.data, grid).contiguous()
                    )
                    module.grid = grid
                    module._resized.clear()
        self._pos_cache.clear()
        self.grid = new_grids[0]
        self.config = new_config

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def adapt_state_dict(
    state_dict: dict[str, torch.Tensor], source: GFNetConfig, target: GFNetConfig
) -> dict[str, torch.Tensor]:
    """Resize a state dict saved at ``source.img_size`` for a model at ``target.img_size``."""
    old_grids, new_grids = source.grid_sizes(), target.grid_sizes()
    if old_grids == new_grids:
        return dict(state_dict)
    adapted = {}
    for key, value in state_dict.items():
        if key == "pos_embed":
            value = resize_pos_embed(value, old_grids[0], new_grids[0])
        elif key.endswith("filter.complex_weight"):
            stage = int(key.split(".")[1]) if source.kind == "pyramid" else 0
            value = resize_filter(value, new_grids[stage]).contiguous()
        adapted[key] = value
    return adapted
