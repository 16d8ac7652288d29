"""``gfnet download``: fetch a MODEL into the local cache and print its folder."""

from __future__ import annotations

import typer

from gfnet_cli.cli._common import emit_json, stdout
from gfnet_cli.cli.options import JsonOption, ModelArgument, RevisionOption


def download_command(
    model: ModelArgument,
    revision: RevisionOption = None,
    force_download: bool = typer.Option(
        False, "--force-download", help="Fetch the files again even if they are cached."
    ),
    as_json: JsonOption = False,
) -> None:
    """Download a MODEL (config.json, model.safetensors, README.md) and print its local folder.

    Later uses of the same MODEL work offline (HF_HUB_OFFLINE=1) from the cache. A zoo name
    not yet on the Hub is converted once from the authors' checkpoint.
    """
    from gfnet_cli.hub import download

    folder = download(model, revision, force_download=force_download)
    if as_json:
        emit_json({"model": model, "revision": revision, "path": str(folder)})
        return
    stdout.print(str(folder))


def register(app: typer.Typer) -> None:
    app.command("download")(download_command)
