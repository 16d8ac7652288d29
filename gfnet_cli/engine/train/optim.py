"""The optimizer side of the recipe: AdamW parameter groups, the learning-rate schedule, the
loss scaler.

The schedule is linear warmup (from ``warmup_lr``) then cosine decay, per optimizer step
(:func:`lr_at`); its length is planned once from the training source (:meth:`Schedule.plan`),
counting ``accumulate`` micro-batches as one step, and its peak is the learning rate scaled
for the global batch when the recipe says so (:meth:`TrainConfig.scaled_lr`). Weight decay
skips norms, biases, the position embedding and the global filters (:func:`param_groups`,
docs/training.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gfnet_cli.device import autocast_dtype
from gfnet_cli.engine.train.config import TrainConfig


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int,
          warmup_lr: float = 0.0, kind: str = "cosine", power: float = 0.9) -> float:  # fmt: skip
    """Linear warmup from ``warmup_lr`` to ``lr``, then decay to ``min_lr`` at
    ``total_steps``: cosine, or ``kind="poly"``, ``(1 - progress) ** power`` as
    mmsegmentation's ``PolyLR`` (``power`` 0.9 in its schedules)."""
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if kind == "poly":
        return min_lr + (lr - min_lr) * (1 - progress) ** power
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict]:
    """Decay only weight matrices and kernels: not norms, biases, pos_embed or filters.

    What the model lists in ``no_weight_decay()`` (timm's convention) and every 1-D parameter
    (norm gains, biases, layer scale) are not decayed: decaying the global filters shrinks them
    toward an all-pass-nothing filter, and decaying norm gains and biases has no regularizing
    meaning (docs/training.md).
    """
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or name in exempt
        (no_decay if skip and not decay_all else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`; the schedule sets its learning rate every step."""
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay, config.decay_all), lr=config.lr, eps=1e-8
    )


def build_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The fp16 loss scaler (a pass-through for fp32 and bf16, which need none)."""
    return torch.amp.GradScaler(device.type, enabled=autocast_dtype(precision) == torch.float16)


@dataclass(frozen=True)
class Schedule:
    """How long the run is and its learning rate at each step."""

    lr: float
    min_lr: float
    warmup_lr: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    step_limit: float  # no step at or past it (inf: a stream's epochs end when it does)
    kind: str = "cosine"  # or "poly"
    power: float = 0.9  # poly's exponent

    @classmethod
    def plan(cls, config: TrainConfig, batches_per_epoch: int | None, world_size: int = 1
             ) -> Schedule:  # fmt: skip
        """The schedule for ``batches_per_epoch`` (None: a stream of unknown size), with
        ``config.accumulate`` batches to an optimizer step, on ``world_size`` processes.

        Exact for a map-style split, estimated for a stream of known size (its last batches
        per worker may be partial), else ``max_steps`` over ``epochs``.
        """
        if batches_per_epoch is None:
            steps_per_epoch = max(1, math.ceil(config.max_steps / config.epochs))
        else:
            steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate)
        total_steps = config.epochs * steps_per_epoch
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        # A map-style epoch has exactly steps_per_epoch steps; a stream's ends when it does.
        step_limit = (config.max_steps or math.inf) if config.streaming else total_steps
        warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
        return cls(config.scaled_lr(world_size), config.min_lr, config.warmup_lr,
                   steps_per_epoch, total_steps, warmup_steps, step_limit,
                   config.lr_schedule, config.poly_power)  # fmt: skip

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (from 0)."""
        return lr_at(step, self.lr, self.min_lr, self.warmup_steps, self.total_steps,
                     self.warmup_lr, self.kind, self.power)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint records of the schedule."""
        schedule = {"lr": self.lr, "min_lr": self.min_lr, "warmup_lr": self.warmup_lr,
                    "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}  # fmt: skip
        if self.kind != "cosine":  # checkpoints of cosine runs stay as they were
            schedule |= {"kind": self.kind, "power": self.power}
        return schedule
