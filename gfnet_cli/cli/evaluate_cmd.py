"""``gfnet evaluate``: top-1, top-5, loss and throughput of a MODEL on a DATASET."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from gfnet_cli.cli._common import State, emit_json, stderr, stdout
from gfnet_cli.cli.options import (
    BatchSizeOption,
    DatasetConfigOption,
    DatasetOption,
    DeviceOption,
    ImageColumnOption,
    ImgSizeOption,
    JsonOption,
    LabelColumnOption,
    MaskColumnOption,
    ModelOption,
    NumWorkersOption,
    PrecisionOption,
    ReduceLabelsOption,
    StreamingOption,
)
from gfnet_cli.cli.progress import progress_bar

if TYPE_CHECKING:
    from gfnet_cli.commands.evaluate_segmentation import SegmentationEvaluationResult


def evaluate_command(
    model: ModelOption,
    dataset: DatasetOption,
    dataset_config: DatasetConfigOption = None,
    split: str = typer.Option(None, "--split", help="Split (default: validation, then test)."),
    batch_size: BatchSizeOption = 64,
    max_samples: int = typer.Option(
        None, "--max-samples", help="Evaluate this many evenly spaced samples (streaming: first)."
    ),
    img_size: ImgSizeOption = None,
    num_workers: NumWorkersOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    image_column: ImageColumnOption = None,
    label_column: LabelColumnOption = None,
    streaming: StreamingOption = False,
    label_order: str = typer.Option(
        "auto",
        "--label-order",
        help="auto: match class names to the model's; index: take label ids as class indices.",
    ),
    mask_column: MaskColumnOption = None,
    reduce_labels: ReduceLabelsOption = None,
    slide: bool = typer.Option(
        False, "--slide", help="Segmentation: sliding-window inference (512 crops, stride 341)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Segmentation: exit 2 on a mask whose size differs from its image."
    ),
    as_json: JsonOption = False,
    output: Path = typer.Option(
        None, "--output", "-o", help="Also write the full result (per-class accuracy) as JSON."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace FILE if it exists."),
) -> None:
    """Evaluate MODEL on DATASET: top-1, top-5, mean cross-entropy and images/s.

    A segmentation MODEL reports mIoU, mean and overall pixel accuracy and per-class IoU.
    Class names are matched to the model's; unreadable images are skipped and counted.
    Without --num-workers, one DataLoader worker per spare core decodes images.
    """
    from gfnet_cli.commands.evaluate import evaluate

    with progress_bar("evaluating", "images", enabled=not State.quiet) as progress:
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
            progress=progress,
            mask_column=mask_column,
            reduce_labels=reduce_labels,
            slide=slide,
            strict=strict,
            output=output,
            overwrite=overwrite,
        )
    if output is not None:
        if not State.quiet:
            stderr.print(f"wrote {output}")
    if as_json:
        emit_json(result.summary())
        return
    if hasattr(result, "mean_iou"):  # a segmentation MODEL's result
        _segmentation_table(result)
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


def _segmentation_table(result: SegmentationEvaluationResult) -> None:
    table = Table(title=f"{result.model} on {result.dataset} ({result.split})", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("mIoU", f"{100 * result.mean_iou:.2f} %")
    table.add_row("mean accuracy", f"{100 * result.mean_accuracy:.2f} %")
    table.add_row("overall accuracy", f"{100 * result.overall_accuracy:.2f} %")
    table.add_row("images", f"{result.num_samples:,}")
    if result.num_skipped:
        table.add_row("skipped", f"{result.num_skipped:,}")
    table.add_row("images/s", f"{result.images_per_second:.2f}")
    table.add_row("inference", f"{result.mode}, shorter side {result.img_size}")
    stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
