"""``gfnet predict``: top-k classes for images, folders and glob patterns."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from gfnet_cli.cli._common import emit_json, stdout
from gfnet_cli.errors import UsageError
from gfnet_cli.predict import DEFAULT_MODEL, count_failures, predict


def predict_command(
    images: list[str] = typer.Argument(
        ...,
        metavar="IMAGE",
        help="Image files, folders (searched recursively) or glob patterns (quoted).",
    ),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="MODEL: a folder, a Hub id or a zoo name."
    ),
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many classes to show per image."),
    img_size: int = typer.Option(
        None, "--img-size", help="Run the model at this resolution (weights resized)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto (cuda, mps, cpu), cpu, cuda, mps."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (autocast)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Classify images. Every readable input is predicted; unreadable ones are reported.

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
    )
    if as_json:
        emit_json([result.to_dict() for result in results])
    else:
        for result in results:
            if not result.ok:
                stdout.print(f"[bold]{escape(result.image)}[/bold]: [red]{escape(result.error)}")
                continue
            table = Table(title=escape(result.image), title_justify="left")
            table.add_column("rank", justify="right")
            table.add_column("class")
            table.add_column("score", justify="right")
            for rank, item in enumerate(result.predictions, 1):
                table.add_row(str(rank), escape(item["label"]), f"{item['score']:.4f}")
            stdout.print(table)
    failed = count_failures(results)
    if failed:
        raise UsageError(f"{failed} of {len(results)} inputs could not be read")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
