"""Untargeted L-infinity attacks in [0, 1] pixel space: FGSM and PGD.

The attacks perturb the pixels the model's evaluation transform produces (resized and
cropped, before normalization); :class:`PixelModel` normalizes inside, so a budget ``epsilon``
means the same thing for every model: at most ``epsilon`` of the pixel range per value
(``1/255`` is one grey level). Adversarial images are clipped to [0, 1].

- FGSM (Goodfellow et al., ICLR 2015): ``x + epsilon * sign(grad)``.
- PGD (Madry et al., ICLR 2018): ``steps`` FGSM steps of ``step_size``, each projected back
  into the epsilon-ball around ``x`` and into [0, 1]; optionally from a random start. The step
  defaults to half the budget (0.5/255 at 1/255), so that a curve over several budgets keeps
  the same geometry: five fixed steps of 0.5/255 could not leave a ball of radius 2.5/255.

Gradients must flow through the global filter's FFTs: the fused CPU inference path (which has
no autograd) is switched off while an attack computes gradients, and the inputs require grad,
so it could not be chosen anyway (tests/test_robustness.py checks both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gfnet_cli.device import autocast_context
from gfnet_cli.errors import UsageError
from gfnet_cli.models.layers import fused_inference

ATTACKS = ("fgsm", "pgd")
# The setting of the robustness studies the paper's Table 3 reports (docs/analysis.md):
DEFAULT_EPSILON = 1 / 255
DEFAULT_PGD_STEPS = 5
DEFAULT_PGD_STEP_SIZE = 0.5 / 255  # at the default budget: the step is half the budget
PGD_STEP_FRACTION = DEFAULT_PGD_STEP_SIZE / DEFAULT_EPSILON


class PixelModel(nn.Module):
    """``model(normalize(x))`` for ``x`` in [0, 1] pixels, in ``precision`` (fp32 logits out)."""

    def __init__(
        self, model: nn.Module, mean: list[float], std: list[float], precision: str = "fp32"
    ) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        device = next(model.parameters()).device
        self.register_buffer("mean", torch.tensor(mean, device=device).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, device=device).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        with autocast_context(pixels.device, self.precision):
            logits = self.model((pixels - self.mean) / self.std)
        return logits.float()


def check_epsilon(epsilon: float) -> float:
    epsilon = float(epsilon)
    if not 0 <= epsilon <= 1:
        raise UsageError(
            f"epsilons must be in [0, 1] (pixel units: 1/255 is one grey level), got {epsilon:g}",
            param="epsilons",
        )
    return epsilon


def input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d(cross-entropy summed over the batch) / d(images), through the plain autograd path."""
    with torch.enable_grad(), fused_inference(False):
        images = images.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(images), labels, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, images)
    return gradient


def fgsm(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """FGSM adversarial images for ``model`` taking [0, 1] pixels (e.g. :class:`PixelModel`)."""
    epsilon = check_epsilon(epsilon)
    if epsilon == 0:
        return images.detach().clone()
    gradient = input_gradient(model, images, labels)
    return (images.detach() + epsilon * gradient.sign()).clamp_(0, 1)


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    *,
    steps: int = DEFAULT_PGD_STEPS,
    step_size: float | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD adversarial images: ``steps`` signed-gradient steps of ``step_size`` (default:
    ``epsilon / 2``), each projected onto the epsilon-ball around ``images`` and onto [0, 1].
    ``random_start`` begins at a uniform point of the ball (drawn from ``generator``)."""
    epsilon = check_epsilon(epsilon)
    check_pgd(steps, step_size)
    step_size = pgd_step(epsilon, step_size)
    images = images.detach()
    low, high = (images - epsilon).clamp(min=0), (images + epsilon).clamp(max=1)
    adversarial = images.clone()
    if random_start and epsilon > 0:
        noise = torch.rand(images.shape, generator=generator, device="cpu").to(images.device)
        adversarial = torch.max(torch.min(images + (2 * noise - 1) * epsilon, high), low)
    if epsilon == 0:
        return adversarial
    for _ in range(steps):
        gradient = input_gradient(model, adversarial, labels)
        adversarial = torch.max(torch.min(adversarial + step_size * gradient.sign(), high), low)
    return adversarial


def pgd_step(epsilon: float, step_size: float | None) -> float:
    """The step PGD takes at budget ``epsilon``: ``step_size``, or half the budget."""
    return PGD_STEP_FRACTION * epsilon if step_size is None else float(step_size)


def check_pgd(steps: int, step_size: float | None) -> None:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise UsageError(f"pgd_steps must be at least 1, got {steps}", param="pgd_steps")
    if step_size is not None and not 0 < float(step_size) <= 1:
        raise UsageError(
            f"pgd_step_size must be in (0, 1] pixel units, got {step_size:g}",
            param="pgd_step_size",
        )
