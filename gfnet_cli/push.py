"""Publishing a MODEL folder to the Hub in one commit (``gfnet push``).

What is sent: every file of the folder (model files, card, ``train_results.json``,
evaluation JSON, plots, ``metrics.jsonl``...) except training checkpoints, pickles, hidden
files and temporary files. ``dry_run`` returns that list without touching the network.
The token comes from huggingface_hub's usual places (``HF_TOKEN``, ``hf auth login``) and
is never printed or logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from gfnet_cli.errors import UsageError
from gfnet_cli.hub import HubAccessError, NetworkError, check_model_folder, hub_endpoint
from gfnet_cli.models.config import CARD_NAME

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
    """The folder's files that belong on the Hub, as sorted POSIX paths relative to it."""
    folder = Path(folder)
    selected = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        parts = relative.parts
        if any(part.startswith(".") for part in parts):
            continue
        if any(fnmatch(part, pattern) for part in parts[:-1] for pattern in EXCLUDED_DIRS):
            continue
        if not path.is_file() or any(fnmatch(parts[-1], p) for p in EXCLUDED_FILES):
            continue
        selected.append(relative.as_posix())
    return selected


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
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    check_repo_id(repo_id)
    config = check_model_folder(folder)
    files = files_to_push(folder)
    if CARD_NAME in files:
        _check_card(folder / CARD_NAME)
    generated: list[str] = []
    card_bytes: bytes | None = None
    if CARD_NAME not in files:
        from gfnet_cli.card import model_card
        from gfnet_cli.hub import safetensors_shapes
        from gfnet_cli.models.config import WEIGHTS_NAME

        shapes = safetensors_shapes(folder / WEIGHTS_NAME)
        num_params = sum(_numel(shape) for shape in shapes.values())
        card_bytes = model_card(config, num_params=num_params, repo_id=repo_id).encode()
        generated.append(CARD_NAME)
        files = sorted(files + [CARD_NAME])
    message = commit_message or f"Upload {config.architecture or 'GFNet'} with gfnet-cli"
    result = PushResult(repo_id, revision, files, message, dry_run, generated=generated)
    if dry_run:
        return result

    token = token or _require_token()
    api = HfApi(endpoint=hub_endpoint(), token=token)
    operations = [
        CommitOperationAdd(
            path_in_repo=name,
            path_or_fileobj=card_bytes if name in generated else str(folder / name),
        )
        for name in files
    ]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=message,
            revision=revision,
            repo_type="model",
        )
    except Exception as exc:
        raise _push_error(exc, repo_id) from None
    result.commit_url = getattr(info, "commit_url", None)
    logger.info("pushed %d files to %s", len(files), repo_id)
    return result


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
            f"{path}: the model card's metadata is invalid ({_first_line(exc)}): fix or remove it"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _push_error(exc: Exception, repo_id: str) -> Exception:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return HubAccessError(
                f"the Hub refused the token for {repo_id} (401): run `hf auth login` or set a "
                "valid HF_TOKEN"
            )
        if status == 403:
            return HubAccessError(
                f"the token may not write to {repo_id} (403): use a token with write access to "
                "that namespace"
            )
        if status == 404:
            return UsageError(f"{repo_id} or its namespace does not exist on the Hub (404)")
        return UsageError(f"the Hub refused the push to {repo_id} ({status}): try again later")
    module = type(exc).__module__ or ""
    if module.startswith(("httpx", "httpcore")) or isinstance(exc, (ConnectionError, TimeoutError)):
        return NetworkError(
            f"cannot reach the Hub at {hub_endpoint()} to push {repo_id}: check your connection"
        )
    return exc
