"""Inference speed: this project's GFNet against a reference written like the paper's listing.

Not part of the test run. Builds GFNet-XS (or ``--model``) with random weights, loads the same
weights into a straightforward reference GFNet defined below (the authors' style: tokens as
(B, N, C), a view to (B, a, b, C) around ``rfft2``/``irfft2``, separate ``nn.Linear``, ``nn.GELU``
and ``nn.Linear`` in the MLP), checks that the logits agree, then times both interleaved in the
same process (warm-up, then alternating repeats) and prints medians, images/s and ratios.

``--form`` (repeatable: auto, fft, matmul; default auto and fft) times our model with the global
filter in that form (``filter_form``; auto: the faster form per grid, measured once).

    PYTHONPATH=. python benchmarks/bench_inference.py --batch-size 32 --repeats 10
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time

import torch
from torch import nn

from gfnet_cli import create_model
from gfnet_cli.device import autocast_context
from gfnet_cli.models.layers import filter_form


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
    """A block; with ``layer_scale`` the pyramid's (the authors' BlockLayerScale: gamma)."""

    def __init__(self, dim: int, h: int, w: int, layer_scale: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = RefGlobalFilter(dim, h, w)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMlp(dim, dim * 4)
        self.gamma = nn.Parameter(torch.ones(dim)) if layer_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.mlp(self.norm2(self.filter(self.norm1(x))))
        return x + (branch if self.gamma is None else self.gamma * branch)


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


class RefDownLayer(nn.Module):
    """Between pyramid stages, as the authors write it: tokens to a grid, a 2x2 stride-2
    convolution, back to tokens."""

    def __init__(self, size: int, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.size, self.dim_out = size, dim_out
        self.proj = nn.Conv2d(dim_in, dim_out, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        x = x.view(batch, self.size, self.size, channels).permute(0, 3, 1, 2)
        return self.proj(x).permute(0, 2, 3, 1).reshape(batch, -1, self.dim_out)


class RefGFNetPyramid(nn.Module):
    """The hierarchical GFNet (GFNet-H) as the paper's code writes it (same state-dict keys)."""

    def __init__(self, img_size: int, patch: int, dims: list[int], depths: list[int],
                 classes: int) -> None:  # fmt: skip
        super().__init__()
        sizes = [img_size // patch // 2**i for i in range(4)]
        self.patch_embed = nn.ModuleList(
            [RefPatchEmbed(dims[0], patch)]
            + [RefDownLayer(sizes[i], dims[i], dims[i + 1]) for i in range(3)]
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, sizes[0] ** 2, dims[0]))
        self.blocks = nn.ModuleList(
            nn.Sequential(*(RefBlock(dims[i], sizes[i], sizes[i] // 2 + 1, layer_scale=True)
                            for _ in range(depths[i])))  # fmt: skip
            for i in range(4)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in range(4):
            x = self.patch_embed[stage](x)
            if stage == 0:
                x = x + self.pos_embed
            x = self.blocks[stage](x)
        return self.head(self.norm(x).mean(1))


def reference_for(model: nn.Module) -> nn.Module:
    """A reference GFNet (flat or pyramid) holding exactly ``model``'s weights."""
    config = model.config
    if config.kind == "pyramid":
        ref = RefGFNetPyramid(config.image_size[0], config.patch_size, list(config.widths),
                              list(config.depths), config.num_classes)  # fmt: skip
        ref.load_state_dict(model.state_dict(), strict=True)
        return ref.eval()
    ref = RefGFNet(
        config.image_size[0],
        config.patch_size,
        config.widths[0],
        config.depths[0],
        config.num_classes,
    )
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref.eval()


# --------------------------------------------------------------------------- timing
def _matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's plain fp32 matmul rate (GFLOP/s), for the model's FLOP-rate figure."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def _bench(args: argparse.Namespace, name: str) -> None:
    torch.manual_seed(0)
    ours = create_model(name, img_size=args.resolution).eval()
    ref = reference_for(ours)
    images = torch.randn(args.batch_size, 3, args.resolution, args.resolution)
    forms = args.form or ["auto", "fft"]
    runs = {"reference fp32": (ref, "fp32", None)}
    for precision in ("fp32",) if args.no_bf16 else ("fp32", "bf16"):
        for form in forms:
            runs[f"gfnet {precision} {form}"] = (ours, precision, form)
    if not args.no_bf16:
        runs["reference bf16"] = (ref, "bf16", None)
    with torch.inference_mode():
        expected = ref(images)
        got = ours(images)
        error = (got - expected).abs().max().item()
        print(f"{name}: max |logits - reference| = {error:.2e} (fp32)")
        if error > 1e-4:
            raise SystemExit(f"{name}: logits differ from the reference by {error:.2e} > 1e-4")
        if not args.no_bf16:
            with autocast_context("cpu", "bf16"):
                bf16 = ours(images).float()
            agree = (bf16.argmax(1) == got.argmax(1)).float().mean().item()
            print(f"{name}: bf16 top-1 equal to fp32 on {agree:.1%} of {len(images)} images")
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(ours)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(images)
        seconds = time.perf_counter() - start
        print(f"{name}: torch.compile (inductor, freezing) first call {seconds:.1f} s")
        runs["gfnet fp32 compiled"] = (compiled, "fp32", None)
    times: dict[str, list[float]] = {label: [] for label in runs}
    for i in range(args.warmup + args.repeats):  # interleaved: load changes hit all alike
        for label, (model, precision, form) in runs.items():
            with (
                torch.inference_mode(),
                autocast_context("cpu", precision),
                filter_form(form) if form else contextlib.nullcontext(),
            ):
                start = time.perf_counter()
                model(images)
                elapsed = time.perf_counter() - start
            if i >= args.warmup:
                times[label].append(elapsed)
    medians = {label: statistics.median(values) for label, values in times.items()}
    from gfnet_cli.models.flops import config_gflops

    macs = config_gflops(ours.config) * 1e9 * args.batch_size
    base = medians["reference fp32"]
    threads = torch.get_num_threads()
    print(f"\n{name} @ {args.resolution}px, batch {args.batch_size}, threads {threads}")
    print(f"{'run':<22}{'median ms':>11}{'images/s':>10}{'vs ref fp32':>13}{'GFLOP/s':>9}")
    for label, median in medians.items():
        print(
            f"{label:<22}{median * 1e3:>11.1f}{args.batch_size / median:>10.1f}"
            f"{base / median:>12.2f}x{2 * macs / median / 1e9:>9.0f}"
        )
    print(f"plain fp32 matmul (2048^2): {_matmul_gflops():.0f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="zoo name (repeatable; gfnet-xs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 runs")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--form", action="append", choices=("auto", "fft", "matmul"), help="filter form, repeatable"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.model or ["gfnet-xs"]:
        _bench(args, name)


if __name__ == "__main__":
    main()
