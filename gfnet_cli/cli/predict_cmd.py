"""``gfnet predict``: top-k classes for images, folders and glob patterns."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from gfnet_cli.cli._common import emit_json, report_unreadable, stdout
from gfnet_cli.cli.options import (
    DEFAULT_MODEL,
    BatchSizeOption,
    DeviceOption,
    ImgSizeOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
)
from gfnet_cli.errors import UsageError

if TYPE_CHECKING:
    from gfnet_cli.commands.predict import ImagePrediction


def predict(*args: Any, **kwargs: Any) -> list[ImagePrediction]:
    """:func:`gfnet_cli.commands.predict.predict`, imported when a prediction runs, not for
    ``--help``.

    A module-level name so that tests can stand in for the library call.
    """
    from gfnet_cli.commands.predict import predict as predict_images

    return predict_images(*args, **kwargs)


def predict_command(
    images: list[str] = typer.Argument(
        ...,
        metavar="IMAGE",
        help="Image files, folders (searched recursively) or glob patterns (quoted).",
    ),
    model: ModelOption = DEFAULT_MODEL,
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many classes to show per image."),
    img_size: ImgSizeOption = None,
    batch_size: BatchSizeOption = 32,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    output_dir: Path = typer.Option(
        None, "--output-dir", "-o",
        help="Segmentation: write a mask PNG <stem>.png per image here.",
    ),  # fmt: skip
    overlay: bool = typer.Option(
        False, "--overlay", help="Segmentation: also write <stem>_overlay.png (image + mask)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    as_json: JsonOption = False,
) -> None:
    """Classify images (or segment them, with a segmentation MODEL). Every readable input is
    predicted; unreadable ones are reported.

    Exits with status 2 after processing everything if any input could not be read.
    """
    results = predict(
        images,
        model,
        top_k=top_k,
        img_size=img_size,
        batch_size=batch_size,
        device=device,
        precision=precision,
        output_dir=output_dir,
        overlay=overlay,
        overwrite=overwrite,
    )
    for result in results:
        if not result.ok:
            report_unreadable(result.image, result.error or "")
    if as_json:
        emit_json([result.to_dict() for result in results])
    else:
        for result in results:
            if not result.ok:
                continue
            if result.mask is not None:
                _segmentation_table(result)
                continue
            table = Table(title=escape(result.image), title_justify="left")
            table.add_column("rank", justify="right")
            table.add_column("class")
            table.add_column("score", justify="right")
            for rank, item in enumerate(result.predictions, 1):
                table.add_row(str(rank), escape(item["label"]), f"{item['score']:.4f}")
            stdout.print(table)
    from gfnet_cli.commands.predict import count_failures

    failed = count_failures(results)
    if failed:
        raise UsageError(f"{failed} of {len(results)} inputs could not be read")


def _segmentation_table(result: ImagePrediction) -> None:
    height, width = result.mask.shape
    title = f"{escape(result.image)} ({width}x{height})"
    if result.outputs:
        title += f" -> {escape(result.outputs[0])}"
    table = Table(title=title, title_justify="left")
    table.add_column("class")
    table.add_column("pixels", justify="right")
    for item in result.predictions:
        table.add_row(escape(item["label"]), f"{100 * item['share']:.1f} %")
    stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
