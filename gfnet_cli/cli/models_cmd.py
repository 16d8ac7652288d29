"""``gfnet models``: the model zoo."""

from __future__ import annotations

import typer
from rich.table import Table

from gfnet_cli.cli._common import emit_json, stdout
from gfnet_cli.cli.options import JsonOption


def models(as_json: JsonOption = False) -> None:
    """List the authors' ImageNet-1k variants: params, GFLOPs at 224 px, published accuracy,
    and where each one's weights come from."""
    from gfnet_cli.commands.profile import model_table

    rows = model_table()
    if as_json:
        emit_json([row.to_dict() for row in rows])
        return
    table = Table(title="GFNet model zoo (ImageNet-1k top-1/top-5 %, 224 px)")
    for column, justify in (
        ("name", "left"),
        ("kind", "left"),
        ("params", "right"),
        ("GFLOPs", "right"),
        ("px", "right"),
        ("top-1", "right"),
        ("top-5", "right"),
        ("weights", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column == "name")
    for row in rows:
        table.add_row(
            row.name,
            row.kind,
            f"{row.params / 1e6:.2f}M",
            f"{row.gflops:.2f}",
            str(row.img_size),
            f"{row.top1:.1f}",
            f"{row.top5:.1f}",
            _weights_from(row.source),
        )
    stdout.print(table)
    stdout.print("GFLOPs: multiply-accumulates, FFTs included (docs/flops.md).", style="dim")
    stdout.print(
        "Weights: the authors' checkpoints (✓ converted and cached), pinned by sha256 on first "
        "use (docs/trust.md); GFNET_ZOO_MIRROR and GFNET_HUB_ORG change the source.",
        style="dim",
    )


def _weights_from(source: dict) -> str:
    if source.get("kind") == "hub":
        revision = source.get("revision")
        return f"Hub {source['location']}" + (f"@{revision[:12]}" if revision else "")
    origin = "authors" if source.get("kind") == "authors" else "mirror"
    return origin + (" ✓" if source.get("cached") else "")


def register(app: typer.Typer) -> None:
    app.command("models")(models)
