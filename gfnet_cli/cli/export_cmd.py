"""``gfnet export``: a MODEL as an ONNX file or a torch.export program, checked against PyTorch."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.markup import escape

from gfnet_cli.cli._common import State, emit_json, stdout
from gfnet_cli.cli.options import JsonOption, ModelArgument
from gfnet_cli.cli.progress import progress_bar
from gfnet_cli.errors import UsageError

FORMATS = ("onnx", "pt2")  # gfnet_cli.commands.export.FORMATS
FFT_CHOICES = ("auto", "native", "matmul")  # gfnet_cli.commands.export.FFT_CHOICES


def parse_img_size(text: str | None) -> int | tuple[int, int] | None:
    """``224`` -> 224, ``224x320`` -> (224, 320) (height x width)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if match is None:
        raise UsageError(
            f"img_size must be N or HxW (e.g. 224 or 224x320), got {text!r}", param="img_size"
        )
    height, width = match.groups()
    return int(height) if width is None else (int(height), int(width))


def export_command(
    model: ModelArgument,
    output: Path = typer.Argument(
        ..., metavar="OUT", help="The file to write (.onnx or .pt2; the format follows it)."
    ),
    export_format: str = typer.Option(
        None, "--format", help="onnx or pt2 (torch.export). Default: OUT's suffix, else onnx."
    ),
    export_size: str = typer.Option(
        None,
        "--img-size",
        help="Input size built into the file: N or HxW (default: MODEL's; weights resized).",
    ),
    dynamic_batch: bool = typer.Option(
        False, "--dynamic-batch", help="Leave the batch dimension free (the default)."
    ),
    fixed_batch: int = typer.Option(
        None, "--batch-size", help="Fix the batch dimension to N instead of leaving it free."
    ),
    opset: int = typer.Option(
        None, "--opset", help="ONNX opset (18 or newer; default: the exporter's)."
    ),
    fft: str = typer.Option(
        "auto",
        "--fft",
        help="The global filter's form: native (ONNX DFT ops), matmul (DFT as matrix "
        "products: any runtime) or auto (the faster form onnxruntime runs correctly).",
    ),
    quantize: str = typer.Option(
        None,
        "--quantize",
        help="int8: quantize the MLPs and head (onnxruntime, dynamic), checked against fp32.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    as_json: JsonOption = False,
) -> None:
    """Export MODEL to an ONNX file or a torch.export program (.pt2) that runs without gfnet.

    The file carries the preprocessing and class names in its metadata; it is run against
    PyTorch before it is renamed into place (the largest logit difference is reported).
    `gfnet predict` and `gfnet evaluate` take an exported .onnx file as MODEL.
    """
    from gfnet_cli.commands.export import export_model

    with progress_bar("exporting", "steps", enabled=not State.quiet) as progress:
        result = export_model(
            model,
            output,
            format=export_format,
            img_size=parse_img_size(export_size),
            batch_size=fixed_batch,
            dynamic_batch=dynamic_batch or None,
            opset=opset,
            fft=fft,
            quantize=quantize,
            overwrite=overwrite,
            progress=progress,
        )
    if as_json:
        emit_json(result.to_dict())
        return
    height, width = result.img_size
    batch = "dynamic" if result.batch_size is None else str(result.batch_size)
    file_format = f"onnx, opset {result.opset}" if result.format == "onnx" else result.format
    check = "onnxruntime (CPU)" if result.format == "onnx" else "torch.export.load"
    stdout.print(f"Exported {escape(str(model))}")
    stdout.print(f"  format:  {file_format}")
    form = "DFT ops" if result.fft == "native" else "DFT as matrix products"
    stdout.print(f"  filter:  {result.fft} ({form})")
    if result.native_rejected:
        stdout.print(f"           (native rejected: {escape(result.native_rejected)})")
    channels = result.metadata["input_size"][0]
    stdout.print(f"  input:   \\[{batch}, {channels}, {height}, {width}] float32, NCHW")
    stdout.print(f"  check:   {check} vs PyTorch, max |logit diff| {result.max_abs_diff:.2e}")
    if result.quantization:
        q = result.quantization
        smaller = q["fp32_bytes"] / q["int8_bytes"]
        stdout.print(
            f"  int8:    top-1 = fp32 on {q['top1_agreement']:.1%} of {q['check_images']} images,"
            f" max |logit error| {q['max_logit_error']:.2e}; {smaller:.1f}x smaller than fp32"
        )
    stdout.print(escape(str(result.output)))


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
