"""``gfnet evaluate``: top-1, top-5, loss and throughput of a MODEL on a DATASET."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gfnet_cli.cli._common import State, emit_json, stderr, stdout
from gfnet_cli.engine.evaluate import evaluate


def evaluate_command(
    model: str = typer.Option(
        ..., "--model", "-m", help="MODEL: a folder, a Hub id or a zoo name."
    ),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="A Hub dataset id, an image folder or a save_to_disk folder."
    ),
    dataset_config: str = typer.Option(None, "--dataset-config", help="Hub dataset configuration."),
    split: str = typer.Option(None, "--split", help="Split (default: validation, then test)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Images per forward pass."),
    max_samples: int = typer.Option(
        None, "--max-samples", help="Evaluate this many evenly spaced samples (streaming: first)."
    ),
    img_size: int = typer.Option(
        None, "--img-size", help="Run the model at this resolution (weights resized)."
    ),
    num_workers: int = typer.Option(
        None, "--num-workers", help="DataLoader workers decoding images (default: spare cores)."
    ),
    device: str = typer.Option("auto", "--device", help="auto (cuda, mps, cpu), cpu, cuda, mps."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (autocast)."),
    image_column: str = typer.Option(None, "--image-column", help="The image column."),
    label_column: str = typer.Option(None, "--label-column", help="The label column."),
    streaming: bool = typer.Option(
        False, "--streaming", help="Stream a Hub dataset instead of downloading it."
    ),
    label_order: str = typer.Option(
        "auto",
        "--label-order",
        help="auto: match class names to the model's; index: take label ids as class indices.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Also write the full result (per-class accuracy) as JSON."
    ),
) -> None:
    """Evaluate MODEL on DATASET: top-1, top-5, mean cross-entropy and images/s.

    Class names are matched to the model's; unreadable images are skipped and counted.
    """
    result = evaluate(
        model,
        dataset,
        split=split,
        dataset_config=dataset_config,
        batch_size=batch_size,
        max_samples=max_samples,
        img_size=img_size,
        num_workers=num_workers,
        device=device,
        precision=precision,
        image_column=image_column,
        label_column=label_column,
        streaming=streaming,
        label_order=label_order,
        progress=not State.quiet,
    )
    if output is not None:
        result.save(output)
        if not State.quiet:
            stderr.print(f"wrote {output}")
    if as_json:
        emit_json(result.summary())
        return
    table = Table(title=f"{result.model} on {result.dataset} ({result.split})", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("top-1", f"{100 * result.top1:.2f} %")
    table.add_row("top-5", f"{100 * result.top5:.2f} %")
    table.add_row("loss", f"{result.loss:.4f}")
    table.add_row("samples", f"{result.num_samples:,}")
    if result.num_skipped:
        table.add_row("skipped", f"{result.num_skipped:,}")
    table.add_row("images/s", f"{result.images_per_second:.1f}")
    table.add_row("image size", "x".join(map(str, result.img_size)))
    stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
