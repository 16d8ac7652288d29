"""``gfnet visualize``: a MODEL's learned global filters, like the paper's Figure 5."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gfnet_cli.cli._common import State, emit_json, stderr, stdout
from gfnet_cli.cli.options import JsonOption, ModelArgument

DEFAULT_CHANNELS = 6  # gfnet_cli.analysis.filters.DEFAULT_CHANNELS


def visualize_command(
    model: ModelArgument,
    output: Path = typer.Option(
        None, "--output", "-o", help="Write the figure here (PNG; needs the plot extra)."
    ),
    layers: str = typer.Option(
        "all", "--layers", help="Layers to show: all, or numbers and ranges from 1 (1,4-6)."
    ),
    channels: int = typer.Option(
        DEFAULT_CHANNELS, "--channels", "-c", help="Channels drawn per layer (the first N)."
    ),
    data: Path = typer.Option(
        None, "--data", help="Also write both views of every channel as safetensors."
    ),
    scale: str = typer.Option(
        "panel", "--scale", help="Colour scale: one per panel, or one per layer (row)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
    as_json: JsonOption = False,
) -> None:
    """Draw MODEL's global filters, in frequency and space, per layer.

    Frequency domain: each layer's |filter| over the full spectrum, zero
    frequency in the middle (channel mean, then the first --channels).
    Spatial domain: the kernel each channel is convolved with. Pyramid
    models: one section per stage. Without --output, the summary only.
    See docs/analysis.md.
    """
    from gfnet_cli.analysis.filters import filters

    result = filters(
        model,
        layers=layers,
        channels=channels,
        output=output,
        data=data,
        overwrite=overwrite,
        scale=scale,
    )
    if not State.quiet:
        for path in (result.output, result.data):
            if path is not None:
                stderr.print(f"wrote {path}")
    if as_json:
        emit_json(result.summary())
        return
    pyramid = result.kind == "pyramid"
    table = Table(title=f"{result.model}: global filters ({result.kind})")
    columns = [
        "layer",
        *(["stage"] if pyramid else []),
        "grid",
        "C",
        "low-freq.",
        "flat",
        "centroid",
        "peak fy,fx",
    ]
    for column in columns:
        table.add_column(column, justify="right")
    for layer in result.layers:
        stats = layer.stats()
        low, centroid = stats["low_frequency_energy"], stats["spectral_centroid"]
        fy, fx = stats["peak_frequency"]
        table.add_row(
            str(layer.layer),
            *([str(layer.stage)] if pyramid else []),
            "x".join(map(str, layer.grid)),
            str(layer.channels),
            "-" if low is None else f"{100 * low:.1f} %",
            f"{100 * stats['flat_low_frequency_energy']:.1f} %",
            "-" if centroid is None else f"{centroid:.3f}",
            f"{fy:+.2f},{fx:+.2f}",
        )
    stdout.print(table)
    stdout.print(
        "low-freq.: share of the filters' energy |W|^2 within 0.25 cycles per token of zero "
        "frequency; flat: that share for a filter without preference; centroid: energy-"
        "weighted mean frequency; peak: strongest frequency of the channel mean (cycles per "
        "token).",
        style="dim",
    )


def register(app: typer.Typer) -> None:
    app.command("visualize")(visualize_command)
