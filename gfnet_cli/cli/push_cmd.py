"""``gfnet push``: publish a MODEL folder to the Hub in one commit."""

from __future__ import annotations

from pathlib import Path

import typer

from gfnet_cli.cli._common import emit_json, stderr, stdout
from gfnet_cli.cli.options import JsonOption


def push(
    directory: Path = typer.Argument(..., help="The MODEL folder (convert / finetune output)."),
    repo_id: str = typer.Argument(..., help="The Hub repository, org/name (created if needed)."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    revision: str = typer.Option(
        None, "--revision", help="Branch to commit to (created if needed; default main)."
    ),
    commit_message: str = typer.Option(None, "--commit-message", help="The commit message."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the files that would be sent; send nothing."
    ),
    as_json: JsonOption = False,
) -> None:
    """Upload a MODEL folder's model files, card and results to the Hub in one commit.

    Checkpoints, pickles, hidden and temporary files are never sent. The token comes from
    HF_TOKEN or `hf auth login`.
    """
    from gfnet_cli.hub.push import push_folder

    result = push_folder(
        directory,
        repo_id,
        private=private,
        revision=revision,
        commit_message=commit_message,
        dry_run=dry_run,
    )
    if as_json:
        emit_json(result.to_dict())
        return
    target = repo_id + (f"@{revision}" if revision else "")
    if dry_run:
        stderr.print(f"Would upload {len(result.files)} files to {target} (dry run):")
        for name in result.files:
            note = " (generated)" if name in result.generated else ""
            stdout.print(f"{name}{note}")
        return
    for name in result.files:
        stderr.print(f"  {name}")
    stdout.print(f"Pushed {len(result.files)} files to {target}")
    if result.commit_url:
        stdout.print(result.commit_url)


def register(app: typer.Typer) -> None:
    app.command("push")(push)
