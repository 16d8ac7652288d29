"""``gfnet download``: fetch a MODEL into the local cache and print its folder."""

from __future__ import annotations

import typer

from gfnet_cli.cli._common import emit_json, stderr, stdout
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
    is the authors' checkpoint, converted once and pinned by its sha256 (docs/trust.md); the
    source is said on stderr (and under "source" with --json).
    """
    from gfnet_cli.hub.resolve import download, zoo_model_source

    folder = download(model, revision, force_download=force_download)
    source = zoo_model_source(model, revision)
    if as_json:
        emit_json(
            {
                "model": model,
                "revision": revision,
                "path": str(folder),
                "source": source.to_dict() if source else None,
            }
        )
        return
    if source is not None:
        stderr.print(f"source: {source.describe()}")
    stdout.print(str(folder))


def register(app: typer.Typer) -> None:
    app.command("download")(download_command)
