"""How much the bf16 DFT products cost in accuracy: bf16 autocast with the global filter's DFT
in bf16 against fp32 DFTs, both against the fp32 model.

Not part of the test run. Two measurements:

- real images: a small GFNet trained from scratch on scikit-learn's digits (as
  scripts/demo.sh does, 32 px: an 8 x 8 token grid), then on the 360 held-out test scans the
  top-1 agreement with the fp32 model and the largest logit error, for bf16 autocast with fp32
  DFTs (``bf16_dft(False)``) and with bf16 DFTs;
- full-size architectures with random weights (``--variant``, default all seven at their
  native size): the largest logit error relative to the largest logit, same two runs.

The matmul form is forced in both bf16 runs (``filter_form("matmul")``), so the comparison is
of the DFT's precision alone. ``--int8`` also exports the digits model as an int8 ONNX file
(``export_model(..., quantize="int8")``) and scores it the same way on the real test scans.

    PYTHONPATH=. python benchmarks/bench_bf16_dft.py [--epochs 8] [--variant gfnet-xs] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gfnet_cli import GFNetConfig, create_model
from gfnet_cli.models.layers import bf16_dft, filter_form
from gfnet_cli.models.zoo import ZOO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from export_digits import export_digits  # noqa: E402


def digits_tensors(size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The demo's digits splits as normalized (N, 3, size, size) tensors and labels."""
    from PIL import Image

    splits = {}
    with tempfile.TemporaryDirectory() as folder:
        export_digits(Path(folder), size=size)
        for split in ("train", "test"):
            files = sorted(Path(folder, split).glob("*/*.png"))
            pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
            images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
            labels = torch.tensor([int(f.parent.name) for f in files])
            splits[split] = ((images - 0.5) / 0.25, labels)
    return splits


def train_digits(size: int, epochs: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    config = GFNetConfig(
        patch_size=4, embed_dim=64, depth=2, img_size=size, crop_pct=1.0, num_classes=10
    )
    model = create_model(config)
    splits = digits_tensors(size)
    images, labels = splits["train"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), *splits["test"]


def compare(model: torch.nn.Module, images: torch.Tensor) -> dict[str, dict[str, float]]:
    """fp32 logits against bf16 autocast with fp32 DFTs and with bf16 DFTs."""
    with torch.inference_mode():
        with filter_form("fft"):
            fp32 = model(images).float()
        runs = {}
        for name, bf16 in (("fp32 DFT", False), ("bf16 DFT", True)):
            with filter_form("matmul"), bf16_dft(bf16), torch.autocast("cpu", torch.bfloat16):
                logits = model(images).float()
            runs[name] = {
                "top1_agreement": (logits.argmax(1) == fp32.argmax(1)).float().mean().item(),
                "max_logit_error": (logits - fp32).abs().max().item(),
                "relative_error": ((logits - fp32).abs().max() / fp32.abs().max()).item(),
            }
    return runs


def int8_on(model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """The int8 export of ``model`` against fp32 PyTorch on ``images``."""
    import onnxruntime

    from gfnet_cli import export_model

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "int8.onnx"
        export_model(model, path, fft="matmul", quantize="int8")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = torch.from_numpy(session.run(None, {"pixel_values": images.numpy()})[0])
    with torch.inference_mode(), filter_form("fft"):
        fp32 = model(images).float()
    return {
        "top1_agreement": (logits.argmax(1) == fp32.argmax(1)).float().mean().item(),
        "max_logit_error": (logits - fp32).abs().max().item(),
        "relative_error": ((logits - fp32).abs().max() / fp32.abs().max()).item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="digits image size (patch 4)")
    parser.add_argument("--variant", action="append", help="zoo name (repeatable; all; none)")
    parser.add_argument("--images", type=int, default=2, help="random images per variant")
    parser.add_argument("--int8", action="store_true", help="also the digits model's int8 file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict[str, dict] = {}
    model, images, labels = train_digits(args.size, args.epochs)
    with torch.inference_mode():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    digits_case = f"digits {args.size}px (fp32 top-1 {accuracy:.1%}, {len(images)} images)"
    report[digits_case] = compare(model, images)
    if args.int8:
        report[digits_case]["int8 ONNX"] = int8_on(model, images)
    for name in [] if args.variant == ["none"] else args.variant or list(ZOO):
        torch.manual_seed(0)
        model = create_model(name).eval()
        size = model.config.image_size
        report[f"{name} {size[0]}px random weights"] = compare(
            model, torch.randn(args.images, 3, *size)
        )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'case':<52}{'DFT':>9}{'top-1 agree':>13}{'max |err|':>11}{'rel err':>9}")
    for case, runs in report.items():
        for dft, row in runs.items():
            print(
                f"{case:<52}{dft:>9}{row['top1_agreement']:>13.2%}"
                f"{row['max_logit_error']:>11.3g}{row['relative_error']:>9.2%}"
            )


if __name__ == "__main__":
    main()
