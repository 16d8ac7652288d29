"""``gfnet convert``: the authors' checkpoints to MODEL folders."""

from __future__ import annotations

from pathlib import Path

import typer

from gfnet_cli.cli._common import emit_json, stdout
from gfnet_cli.cli.options import JsonOption


def convert(
    source: str = typer.Argument(
        ..., help="A checkpoint file (.pth/.pt/.safetensors), an http(s) URL of one, or a zoo name."
    ),
    out_dir: Path = typer.Argument(..., help="The MODEL folder to write."),
    arch: str = typer.Option(
        None, "--arch", help="Zoo variant the checkpoint is (checked against its shapes)."
    ),
    use_ema: bool = typer.Option(False, "--use-ema", help="Convert the EMA weights."),
    labels: str = typer.Option(
        None, "--labels", help="Class names: 'imagenet-1k' or a file (JSON list or one per line)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it exists."),
    as_json: JsonOption = False,
) -> None:
    """Convert an authors' checkpoint to a MODEL folder (config.json, model.safetensors, card).

    The checkpoint is read without executing pickled code; the architecture is inferred from
    its tensor shapes.
    """
    from gfnet_cli.hub.convert import convert_checkpoint

    result = convert_checkpoint(
        source, out_dir, arch=arch, use_ema=use_ema, labels=labels, overwrite=overwrite
    )
    if as_json:
        emit_json(
            {
                "output_dir": str(result.output_dir),
                "source": result.source,
                "architecture": result.config.architecture,
                "params": result.num_params,
                "config": result.config.to_dict() | {"class_names": None},
                "used_ema": result.used_ema,
            }
        )
        return
    config = result.config
    stdout.print(f"Converted {result.source}")
    stdout.print(f"  architecture: {config.architecture or 'custom'} ({config.describe()})")
    stdout.print(f"  parameters:   {result.num_params:,}")
    stdout.print(f"  weights:      {'EMA' if result.used_ema else 'model'}")
    stdout.print(str(result.output_dir))


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
