"""Publishing a MODEL folder to the Hub in one commit (``gfnet push``).

What is sent: every file of the folder (model files, card, ``train_results.json``,
evaluation JSON, plots, ``metrics.jsonl``...) except training checkpoints, pickles, hidden
files and temporary files, as :data:`IGNORE_PATTERNS` says. The upload is huggingface_hub's
``upload_folder`` with those patterns, and ``dry_run`` lists the files with the same filter
huggingface_hub applies, so the list is exactly what would be sent. A folder without a card
gets one, and a folder written before transformers support gets the files transformers loads
it with (:mod:`gfnet_cli.hub.remote_code`: the remote code, ``preprocessor_config.json``,
transformers' keys in config.json), written into a staged copy (links to the files, not
copies); the folder itself is never changed. The token comes from huggingface_hub's usual
places (``HF_TOKEN``, ``hf auth login``) and is never printed or logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gfnet_cli.errors import UsageError, first_line
from gfnet_cli.hub.cache import hub_endpoint
from gfnet_cli.hub.card import LIBRARY_NAME, PLACEHOLDER_REFERENCE, model_card
from gfnet_cli.hub.errors import HubAccessError, HubRequest, hub_error
from gfnet_cli.hub.remote_code import missing_transformers_files
from gfnet_cli.hub.serialization import check_model_folder, count_parameters, safetensors_shapes
from gfnet_cli.models.config import CARD_NAME, WEIGHTS_NAME

logger = logging.getLogger(__name__)

# Never uploaded: resumable training state, pickles (safetensors only), scratch files.
EXCLUDED_DIRS = ("checkpoints", "checkpoint-*", "__pycache__", "wandb", "runs")
EXCLUDED_FILES = (
    "*.pth",
    "*.pt",
    "*.bin",
    "*.pkl",
    "*.ckpt",
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.incomplete",
    "*.lock",
    "*.pyc",
    "*~",
    "*.swp",
)
# huggingface_hub's patterns match the path relative to the folder, and ``*`` crosses ``/``:
# a folder is excluded at the top (``checkpoints/*``) and below it (``*/checkpoints/*``).
IGNORE_PATTERNS: list[str] = [
    *(pattern for name in EXCLUDED_DIRS for pattern in (f"{name}/*", f"*/{name}/*")),
    ".*",  # hidden files, and everything in hidden folders, at the top
    "*/.*",  # ... and further down
    *EXCLUDED_FILES,
]


@dataclass
class PushResult:
    repo_id: str
    revision: str | None
    files: list[str]
    commit_message: str
    dry_run: bool
    commit_url: str | None = None
    generated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "files": self.files,
            "commit_message": self.commit_message,
            "dry_run": self.dry_run,
            "commit_url": self.commit_url,
        }


def files_to_push(folder: str | Path) -> list[str]:
    """The folder's files that belong on the Hub, as sorted POSIX paths relative to it.

    Listed and filtered as ``HfApi.upload_folder`` does (its file walk, its pattern filter,
    its default patterns plus :data:`IGNORE_PATTERNS`).
    """
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    root = Path(folder).expanduser().resolve()
    listed = [p.relative_to(root).as_posix() for p in sorted(root.glob("**/*")) if p.is_file()]
    patterns = IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS
    return sorted(filter_repo_objects(listed, ignore_patterns=patterns))


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
) -> PushResult:
    """Create ``repo_id`` if needed and upload the MODEL folder's files in one commit."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    check_repo_id(repo_id)
    config = check_model_folder(folder)
    files = files_to_push(folder)
    generated = missing_transformers_files(folder, config)
    rewritten: dict[str, str] = {}  # the folder's files sent with changes
    if CARD_NAME in files:
        _check_card(folder / CARD_NAME)
        card = with_repo_id(folder / CARD_NAME, repo_id)  # None: the card is sent as it is
        if card is not None:
            rewritten[CARD_NAME] = card
    else:
        num_params = count_parameters(safetensors_shapes(folder / WEIGHTS_NAME))
        generated[CARD_NAME] = model_card(config, num_params=num_params, repo_id=repo_id)
    files = sorted(set(files) | set(generated))
    message = commit_message or f"Upload {config.architecture or 'GFNet'} with gfnet-cli"
    result = PushResult(repo_id, revision, files, message, dry_run, generated=sorted(generated))
    if dry_run:
        return result

    token = token or _require_token()
    with _staged(folder, files, generated | rewritten) as source:
        info = _upload(
            source, repo_id, private=private, revision=revision, message=message, token=token
        )
    result.commit_url = getattr(info, "commit_url", None)
    logger.info("pushed %d files to %s", len(files), repo_id)
    return result


def _upload(
    folder: Path,
    repo_id: str,
    *,
    private: bool,
    revision: str | None,
    message: str,
    token: str,
) -> Any:
    """Create the repository (and branch) if needed, then one ``upload_folder`` commit."""
    from huggingface_hub import HfApi

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token, library_name=LIBRARY_NAME)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=message,
            revision=revision,
            repo_type="model",
            ignore_patterns=list(IGNORE_PATTERNS),
        )
    except Exception as exc:
        raise hub_error(exc, HubRequest(repo_id, endpoint, action="push")) from None


@contextlib.contextmanager
def _staged(folder: Path, files: list[str], generated: dict[str, str]) -> Iterator[Path]:
    """``folder`` itself, or (when files must be generated) a staged copy holding them.

    The copy links to the folder's files (copying only where links are refused), so staging
    costs no disk space and the user's folder is left as it was.
    """
    if not generated:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="gfnet-push-") as tmp:
        staged = Path(tmp)
        for name in files:
            target = staged / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name in generated:
                target.write_text(generated[name], encoding="utf-8")
                continue
            source = (folder / name).resolve()
            try:
                os.symlink(source, target)
            except OSError:  # e.g. Windows without the symlink privilege
                shutil.copy2(source, target)
        yield staged


def with_repo_id(card_path: Path, repo_id: str) -> str | None:
    """The card with its usage snippets naming ``repo_id`` where they hold the placeholder
    a card gets before the model has a repository (the user's folder is left as it was);
    None when there is nothing to change."""
    text = card_path.read_text(encoding="utf-8")
    if PLACEHOLDER_REFERENCE not in text:
        return None
    return text.replace(PLACEHOLDER_REFERENCE, repo_id)


def check_repo_id(repo_id: str) -> None:
    """Refuse a repository id the Hub would refuse (``org/name``), before any work is done."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"{repo_id!r} is not a Hub repository id: use org/name")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UsageError(
            f"{repo_id!r} is not a valid Hub repository id: org and name use letters, digits, "
            "'-', '_' and '.', do not start or end with '-' or '.', hold no '--' or '..', "
            "and the whole id is at most 96 characters"
        ) from None


def check_push_target(repo_id: str) -> None:
    """What ``finetune --push-to`` checks before training: a valid id and a token."""
    check_repo_id(repo_id)
    _require_token()


def _require_token() -> str:
    from huggingface_hub.utils import get_token

    token = get_token()
    if not token:
        raise HubAccessError(
            "pushing needs a Hub token with write access: run `hf auth login` or set HF_TOKEN"
        )
    return token


def _check_card(path: Path) -> None:
    """The Hub rejects a commit whose README metadata does not parse; fail before uploading."""
    from huggingface_hub import ModelCard

    try:
        ModelCard(path.read_text(encoding="utf-8"))
    except Exception as exc:  # YAML and model-index errors come in many types
        raise UsageError(
            f"{path}: the model card's metadata is invalid ({first_line(exc, 200)}): fix or "
            "remove it"
        ) from None
