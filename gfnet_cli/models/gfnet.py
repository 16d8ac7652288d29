"""The GFNet family: flat (GFNet-Ti/XS/S/B) and pyramid (GFNet-H-Ti/S/B) models.

Parameter names and shapes are exactly the authors', so their checkpoints load with
``strict=True``. Unlike the authors' models these accept any input whose height and width the
patching divides; the position embedding and the filters are resized for other sizes.

The model API is timm's (docs/backbone.md): ``forward_features`` (the normed, unpooled final
map, NCHW), ``forward_head``, ``forward_intermediates`` / ``prune_intermediate_layers`` and
``feature_info`` for dense prediction, ``reset_classifier``, ``num_features``,
``no_weight_decay`` and ``set_grad_checkpointing``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gfnet_cli.errors import UsageError
from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.features import (
    Indices,
    check_output_format,
    feature_take_indices,
    to_format,
)
from gfnet_cli.models.layers import (
    Block,
    DownLayer,
    GlobalFilter,
    PatchEmbed,
    _PerSizeCache,
    resize_filter,
    resize_pos_embed,
)


class GFNetArchitecture(nn.Module):
    """A Global Filter Network built from a :class:`GFNetConfig` (flat or pyramid).

    The plain architecture: it knows nothing of files or the Hub. ``gfnet_cli.GFNet``
    (:class:`gfnet_cli.hub.resolve.GFNet`) adds ``from_pretrained`` / ``save_pretrained`` /
    ``push_to_hub`` on top.

    ``global_pool``: ``"avg"`` (the authors' head: mean over the token grid) or ``""`` (no
    pooling: ``forward`` of a model without classifier returns the feature map).
    """

    def __init__(self, config: GFNetConfig, *, global_pool: str = "avg") -> None:
        super().__init__()
        self.config = config
        widths, depths, ratios = config.widths, config.depths, config.mlp_ratios
        grids = config.grid_sizes()
        self.grid = grids[0]
        self.num_classes = config.num_classes
        self.global_pool = global_pool
        #: width of forward_features' map and of the pooled pre-logits (timm's names)
        self.num_features = self.head_hidden_size = widths[-1]
        #: the maps forward_intermediates can return: every block (flat) or stage (pyramid)
        self.feature_info = _feature_info(config)
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
        #: ``prune_intermediate_layers`` cut it: no longer what ``config`` describes
        self.pruned = False
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

    @property
    def global_pool(self) -> str:
        return self._global_pool

    @global_pool.setter
    def global_pool(self, value: str) -> None:
        if value not in POOLING:
            raise UsageError(
                f"global_pool must be 'avg' (mean over the grid) or '' (none), got {value!r}",
                param="global_pool",
            )
        self._global_pool = value

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(
        self,
        num_classes: int,
        global_pool: str | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        """Replace the head with a fresh one for ``num_classes`` classes (0: no classifier).

        ``global_pool`` (``"avg"`` or ``""``) changes the pooling; ``None`` keeps it. The
        head is made on the device and in the dtype of the model. The 0.1 call
        ``reset_classifier(n, class_names)`` still works.
        """
        if isinstance(global_pool, (list, tuple)):  # reset_classifier(n, class_names), 0.1
            class_names, global_pool = list(global_pool), None
        if global_pool is not None:
            self.global_pool = global_pool
        reference = self.pos_embed
        if num_classes:
            head: nn.Module = nn.Linear(
                self.num_features, num_classes, device=reference.device, dtype=reference.dtype
            )
            if not reference.is_meta:  # nothing to draw on meta (see reset_parameters)
                nn.init.trunc_normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)
        else:
            head = nn.Identity()
        self.head = head.train(self.training)
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

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels to the first token grid (B, H, W, C), position embedding added."""
        self.config.check_image_size((x.shape[-2], x.shape[-1]))
        stem = self.patch_embed if self.config.kind == "flat" else self.patch_embed[0]
        x = stem(x)
        return self.pos_drop(x + self.position_embedding(x.shape[1:3]))

    def _feature_step(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run what produces feature map ``index``: one block (flat) or one stage (pyramid)."""
        if self.config.kind == "flat":
            return self._run_blocks((self.blocks[index],), x)
        if index > 0:
            x = self.patch_embed[index](x)
        return self._run_blocks(self.blocks[index], x)

    def _forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem(x)
        for index in range(len(self.blocks)):
            x = self._feature_step(index, x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map, normed and unpooled: (B, num_features, H/s, W/s).

        ``s`` is the patch size (flat) or 32 (pyramid: 4 x 2^3). NCHW in channels-last memory
        (a permuted view of the (B, H, W, C) grid the blocks work on): dense heads take it as
        it is; ``forward_head`` pools it. (In 0.1 it returned the pooled vector.)
        """
        return self.norm(self._forward_grid(x)).permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool ``forward_features``' map (unless ``global_pool=""``) and classify it.

        ``pre_logits=True`` stops before the classifier: the pooled (B, num_features)
        embedding. Without pooling, the classifier is applied at every position.
        """
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
            return x if pre_logits else self.head(x)
        if pre_logits or isinstance(self.head, nn.Identity):
            return x
        return self.head(x.movedim(1, -1)).movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ backbone
    @property
    def default_out_indices(self) -> int | tuple[int, ...]:
        """The maps a features_only model returns by default (timm's choice).

        A pyramid model: its four stages (strides 4/8/16/32). A flat one: its last three
        blocks, as timm does for ViTs (all at the patch stride).
        """
        if self.config.kind == "pyramid":
            return tuple(range(len(self.blocks)))
        return min(3, len(self.blocks))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature maps of chosen blocks (flat) or stages (pyramid), as timm's models give them.

        ``indices``: ``None`` all, an int ``n`` the last ``n``, or positions in
        ``feature_info`` (negative from the end). ``norm`` applies the final norm to the maps
        it suits (every block of a flat model; the last stage of a pyramid model).
        ``stop_early`` skips the blocks after the last map taken. ``output_fmt``: ``"NCHW"``
        (permuted views, channels-last memory), ``"NHWC"`` or ``"NLC"`` (tokens).

        Returns the maps, or ``(forward_features' map, maps)``.
        """
        check_output_format(output_fmt)
        taken, last = feature_take_indices(len(self.blocks), indices)
        steps = last + 1 if stop_early else len(self.blocks)
        x = self._stem(x)
        intermediates = []
        for index in range(steps):
            x = self._feature_step(index, x)
            if index in taken:
                mapped = self.norm(x) if norm and self._norm_suits(index) else x
                intermediates.append(to_format(mapped, output_fmt))
        if intermediates_only:
            return intermediates
        final = self.norm(x) if self._norm_suits(steps - 1) else x
        return final.permute(0, 3, 1, 2), intermediates

    def _norm_suits(self, index: int) -> bool:
        """Whether the final norm applies to map ``index`` (its width is the last stage's)."""
        return self.config.kind == "flat" or index == len(self.blocks) - 1

    def prune_intermediate_layers(
        self,
        indices: Indices = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the blocks after the last map in ``indices`` (and the head, and the norm).

        What :class:`~gfnet_cli.models.features.FeatureExtractor` does so that every
        parameter left is used. A pyramid model cut before its last stage also loses its
        final norm, which is sized for that stage. Returns the kept indices.

        The result is a feature extractor, no longer the architecture ``config`` describes.
        """
        taken, last = feature_take_indices(len(self.blocks), indices)
        cut_stages = self.config.kind == "pyramid" and last < len(self.blocks) - 1
        self.pruned = self.pruned or last < len(self.blocks) - 1 or prune_norm
        self.blocks = self.blocks[: last + 1]
        if self.config.kind == "pyramid":
            self.patch_embed = self.patch_embed[: last + 1]
        if prune_norm or cut_stages:
            self.norm = nn.Identity()
        if cut_stages:
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or cut_stages:
            self.reset_classifier(0, "")
        return taken

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
                resize_pos_embed(self.pos_embed.data, old_grids[0], new_grids[0]),
                requires_grad=self.pos_embed.requires_grad,  # a frozen model stays frozen
            )
            for module in self.modules():
                if isinstance(module, GlobalFilter):
                    stage = old_grids.index(module.grid)
                    grid = new_grids[stage]
                    module.complex_weight = nn.Parameter(
                        resize_filter(module.complex_weight.data, grid).contiguous(),
                        requires_grad=module.complex_weight.requires_grad,
                    )
                    module.grid = grid
                    module._resized.clear()
        self._pos_cache.clear()
        self.grid = new_grids[0]
        self.config = new_config

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


POOLING = ("avg", "")


def _feature_info(config: GFNetConfig) -> list[dict[str, Any]]:
    """One entry per map forward_intermediates can return: channels, stride, module name."""
    if config.kind == "flat":
        return [
            {"num_chs": config.widths[0], "reduction": config.patch_size, "module": f"blocks.{i}"}
            for i in range(config.depths[0])
        ]
    return [
        {"num_chs": width, "reduction": config.patch_size * 2**stage, "module": f"blocks.{stage}"}
        for stage, width in enumerate(config.widths)
    ]


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
