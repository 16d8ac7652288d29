"""``gfnet models``: the model zoo."""

from __future__ import annotations

import typer
from rich.table import Table

from gfnet_cli.cli._common import emit_json, stdout
from gfnet_cli.cli.options import JsonOption


def models(as_json: JsonOption = False) -> None:
    """List the authors' ImageNet-1k variants: params, GFLOPs at 224 px, published accuracy."""
    from gfnet_cli.profiling import model_table

    rows = model_table()
    if as_json:
        emit_json([row.to_dict() for row in rows])
        return
    table = Table(title="GFNet model zoo (ImageNet-1k, 224 px)")
    for column, justify in (
        ("name", "left"),
        ("kind", "left"),
        ("params", "right"),
        ("GFLOPs", "right"),
        ("img size", "right"),
        ("top-1 %", "right"),
        ("top-5 %", "right"),
    ):
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(
            row.name,
            row.kind,
            f"{row.params / 1e6:.2f}M",
            f"{row.gflops:.2f}",
            str(row.img_size),
            f"{row.top1:.1f}",
            f"{row.top5:.1f}",
        )
    stdout.print(table)
    stdout.print("GFLOPs: multiply-accumulates, FFTs included (docs/flops.md).", style="dim")


def register(app: typer.Typer) -> None:
    app.command("models")(models)
