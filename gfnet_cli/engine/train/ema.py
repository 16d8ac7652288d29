"""An exponential moving average of the weights (``ema``), as timm's ``ModelEmaV2``.

After every optimizer step, ``ema = decay * ema + (1 - decay) * weights`` for every floating
tensor of the state dict. The average lives in a copy of the model on the training device,
in eval mode and without gradients, so it can be evaluated like the model itself. Every
process holds the same weights after a step (DistributedDataParallel), so every process's
average is the same without any communication. Checkpoints hold it, so a resumed run
continues the same average.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gfnet_cli.models.gfnet import GFNetArchitecture


class ModelEma:
    """The moving average of ``model``'s weights with ``decay`` per optimizer step."""

    def __init__(self, model: GFNetArchitecture, decay: float) -> None:
        self.decay = float(decay)
        self.module: GFNetArchitecture = copy.deepcopy(model).eval()
        self.module.set_grad_checkpointing(False)  # never trained: nothing to recompute
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s current weights (one optimizer step)."""
        averaged, current = _floating(self.module), _floating(model)
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


def _floating(model: nn.Module) -> list[torch.Tensor]:
    """The state dict's floating tensors, in a fixed order (parameters and buffers)."""
    return [t for t in model.state_dict().values() if t.is_floating_point()]
