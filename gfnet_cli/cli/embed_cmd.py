"""``gfnet embed``: pooled pre-logits embeddings of images, written to safetensors or parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from gfnet_cli.cli._common import State, emit_json, report_unreadable, stdout
from gfnet_cli.cli.options import (
    BatchSizeOption,
    DeviceOption,
    ImgSizeOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
)
from gfnet_cli.cli.progress import progress_bar
from gfnet_cli.errors import UsageError


def embed_command(
    images: Annotated[
        list[str],
        typer.Argument(
            metavar="IMAGE",
            help="Image files, folders (searched recursively) or glob patterns (quoted).",
        ),
    ],
    model: ModelOption,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="FILE to write: .safetensors (embeddings N x D, image paths in its metadata) "
            "or .parquet (columns image, embedding).",
        ),
    ],
    batch_size: BatchSizeOption = 32,
    img_size: ImgSizeOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace FILE if it exists."),
    as_json: JsonOption = False,
) -> None:
    """Embed images: MODEL's pooled pre-logits features, one row per image, in input order.

    For retrieval, clustering and linear probes. Exits with status 2 after embedding the rest
    if any input could not be read.
    """
    from gfnet_cli.commands.embed import embed

    with progress_bar("embedding", "images", enabled=not State.quiet) as progress:
        result = embed(
            images,
            model,
            output=output,
            batch_size=batch_size,
            img_size=img_size,
            device=device,
            precision=precision,
            overwrite=overwrite,
            progress=progress,
        )
    for entry in result.errors:
        report_unreadable(entry["image"], entry["error"])
    if as_json:
        emit_json(result.to_dict())
    else:
        if result.output is not None:
            stdout.print(
                f"{result.num_images} embeddings of dimension {result.dim} written to "
                f"{escape(str(result.output))} ({result.format})"
            )
    if result.errors:
        total = result.num_images + len(result.errors)
        unwritten = "" if result.output is not None else f"; {output} was not written"
        raise UsageError(f"{len(result.errors)} of {total} inputs could not be read{unwritten}")


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)
