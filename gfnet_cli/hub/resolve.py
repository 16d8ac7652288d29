"""MODEL arguments to models: local folders, Hub repositories and zoo names.

Three ways in, by what the caller needs:

- :func:`resolve_model` -> the local MODEL folder (downloaded or converted on first use);
- :func:`resolve_config` -> the architecture only (zoo names: nothing fetched; Hub
  repositories: ``config.json`` only);
- :func:`load_model` -> the model with its weights, in eval mode.

Models come back as :class:`GFNet`, the architecture of :mod:`gfnet_cli.models` plus
``from_pretrained`` / ``save_pretrained`` / ``push_to_hub``; ``gfnet_cli.GFNet``,
``gfnet_cli.create_model`` and ``gfnet_cli.load_model`` are the ones defined here.

Hub downloads go through ``huggingface_hub.hf_hub_download`` into the standard Hub cache
(``HF_HUB_CACHE`` / ``HF_HOME``), fetching only ``config.json``, ``model.safetensors`` and
``README.md``. Environment variables (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT``,
``HF_TOKEN``, ``HF_HUB_OFFLINE``) are read at call time (:mod:`gfnet_cli.hub.cache`).

Zoo names (``gfnet-xs``) resolve only to sources the project controls (docs/trust.md,
:mod:`gfnet_cli.hub.zoo_source`): the authors' checkpoint (their link or ``$GFNET_ZOO_MIRROR``),
downloaded once, checked against the sha256 recorded at its first use, converted
(weights-only, no pickled code runs) and cached as a MODEL folder under ``$GFNET_CACHE``
(default ``$HF_HOME/gfnet``); later runs need no network. A Hub repository is used only when
the user names its organization (``GFNET_HUB_ORG``) or at a commit the package ships.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch

from gfnet_cli.errors import CheckpointError, ConfigError, ModelNotFoundError, UsageError
from gfnet_cli.hub.cache import (
    cache_dir,
    download_path,
    download_url,
    hub_cache_dir,
    hub_endpoint,
    is_offline,
)
from gfnet_cli.hub.card import model_card
from gfnet_cli.hub.convert import convert_source
from gfnet_cli.hub.errors import (
    DownloadError,
    HubAccessError,
    HubFileMissingError,
    HubRepoNotFoundError,
    HubRequest,
    HubRevisionNotFoundError,
    NetworkError,
    OfflineCacheMissError,
    hub_error,
    unreachable_error,
)
from gfnet_cli.hub.locks import remove_stale_partials
from gfnet_cli.hub.push import push_folder
from gfnet_cli.hub.serialization import (
    REWRITE_HINT,
    CorruptModelError,
    check_model_folder,
    load_model_folder,
    safetensors_shapes,
    save_model,
)
from gfnet_cli.hub.zoo_source import (
    HUB_ORG_ENV as HUB_ORG_ENV,  # re-exported: it lived here before zoo_source.py
)
from gfnet_cli.hub.zoo_source import (
    PROJECT_HUB_ORG,
    ChecksumMismatchError,
    ZooSource,
    converted_folder,
    first_use_lock,
    hub_org_override,
    record_first_use,
    zoo_checkpoint_url,
    zoo_source,
)
from gfnet_cli.models import gfnet as architecture
from gfnet_cli.models.config import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, GFNetConfig
from gfnet_cli.models.factory import (
    check_segmentation_arguments,
    check_task,
    model_config,
)
from gfnet_cli.models.features import FeatureExtractor, Indices, features_only_model
from gfnet_cli.models.segmentation import GFNetForSegmentation, segmentation_from_classifier
from gfnet_cli.models.zoo import ZOO, ZooEntry, get_zoo_entry, is_zoo_name

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ModelT = TypeVar("ModelT", bound="GFNet")


# ---------------------------------------------------------------------------- the model
class GFNet(architecture.GFNetArchitecture):
    """A GFNet that knows MODEL folders and the Hub: the public ``gfnet_cli.GFNet``.

    The methods are the ones huggingface_hub's ``PyTorchModelHubMixin`` users expect, over
    this package's own functions, so the files, cache, zoo names, errors and upload are the
    CLI's: ``from_pretrained`` is :func:`load_model`, ``save_pretrained`` writes a MODEL
    folder with our card, ``push_to_hub`` is ``gfnet push``.
    """

    @classmethod
    def from_pretrained(
        cls: type[ModelT],
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        img_size: int | tuple[int, int] | None = None,
        map_location: str | torch.device | None = "cpu",
    ) -> ModelT:
        """Load a MODEL (local folder, Hub repo ``org/name[@rev]`` or zoo name), eval mode."""
        folder = resolve_model(
            str(pretrained_model_name_or_path),
            revision,
            token=token,
            force_download=force_download,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
        return load_model_folder(folder, img_size=img_size, device=map_location, model_class=cls)

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: Any = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write a MODEL folder (config.json, model.safetensors, README.md card).

        ``config`` is accepted for huggingface_hub's signature and ignored: the model's own
        ``GFNetConfig`` (as it is now, after any ``set_image_size``) is what is saved.
        ``model_card_kwargs`` go to :func:`gfnet_cli.hub.card.model_card`. With ``push_to_hub``,
        the folder is then pushed to ``repo_id`` (default: the folder's name).
        """
        card = model_card(self.config, num_params=self.num_params, **(model_card_kwargs or {}))
        save_model(self, save_directory, card=card)
        if push_to_hub:
            return self.push_to_hub(
                repo_id or Path(save_directory).name,
                model_card_kwargs=model_card_kwargs,
                **push_to_hub_kwargs,
            )
        return None

    def push_to_hub(
        self,
        repo_id: str,
        *,
        config: Any = None,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        branch: str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
    ) -> str | None:
        """Upload this model (config, safetensors, card) to ``repo_id`` in one commit.

        The same upload as ``gfnet push`` (:func:`gfnet_cli.hub.push.push_folder`). Returns the
        commit URL.
        """
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        with tempfile.TemporaryDirectory(prefix="gfnet-push-") as tmp:
            self.save_pretrained(tmp, model_card_kwargs=card_kwargs)
            result = push_folder(
                tmp,
                repo_id,
                private=bool(private),
                revision=branch,
                commit_message=commit_message,
                token=token,
            )
        return result.commit_url


def load_model(
    model: str,
    *,
    revision: str | None = None,
    img_size: int | tuple[int, int] | None = None,
    device: str | torch.device | None = None,
) -> GFNet | GFNetForSegmentation:
    """Load a MODEL (local folder, Hub repo ``org/name[@rev]`` or zoo name) in eval mode.

    With ``img_size``, the position embedding and filters are resized to it as the authors'
    fine-tuning does. A segmentation MODEL loads as a :class:`GFNetForSegmentation`.
    """
    folder = resolve_model(str(model), revision=revision)
    return load_model_folder(folder, img_size=img_size, device=device, model_class=GFNet)


def create_model(
    name_or_config: str | GFNetConfig,
    *,
    pretrained: bool = False,
    img_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    global_pool: str = "avg",
    features_only: bool = False,
    out_indices: Indices = None,
    task: str | None = None,
    **overrides: Any,
) -> GFNet | FeatureExtractor | GFNetForSegmentation:
    """Build a GFNet: a zoo name (``"gfnet-xs"``) or a :class:`GFNetConfig`.

    ``pretrained=True`` loads the variant's ImageNet weights (see :func:`load_model`; any
    MODEL argument works); the head is then replaced when ``num_classes`` differs, and
    weights are resized when ``img_size`` differs. Other keyword arguments override config
    fields (e.g. ``drop_path_rate=0.1``, ``depth=6``) of a model with fresh weights.

    ``features_only=True`` returns the backbone (:class:`FeatureExtractor`, weights loaded
    first): a list of NCHW feature maps, chosen by ``out_indices`` (docs/backbone.md).

    ``task="segmentation"`` builds a :class:`GFNetForSegmentation` (docs/segmentation.md):
    with ``pretrained=True`` its backbone holds the classifier's weights, resized to the
    training crop (``img_size``, default 512), under a new Semantic FPN head for
    ``num_classes`` classes. A segmentation MODEL loads as one without ``task``.
    """
    check_task(task)
    if pretrained:
        if not isinstance(name_or_config, str):
            raise TypeError("pretrained=True needs a model name, not a config")
        if task == "segmentation":
            check_segmentation_arguments(features_only, out_indices, global_pool)
        model = load_model(name_or_config, img_size=None if task == "segmentation" else img_size)
        if isinstance(model, GFNetForSegmentation) or task == "segmentation":
            return _pretrained_segmentation(
                model, task, img_size=img_size, num_classes=num_classes, class_names=class_names
            )
        model.global_pool = global_pool
        if num_classes is not None and num_classes != model.num_classes and not features_only:
            model.reset_classifier(num_classes, class_names=class_names)
        return features_only_model(model, features_only, out_indices)
    config = model_config(
        name_or_config,
        img_size=img_size,
        num_classes=num_classes,
        class_names=class_names,
        task=task,
        **overrides,
    )
    if config.is_segmentation:
        check_segmentation_arguments(features_only, out_indices, global_pool)
        return GFNetForSegmentation(config)
    return features_only_model(GFNet(config, global_pool=global_pool), features_only, out_indices)


def _pretrained_segmentation(
    model: GFNet | GFNetForSegmentation,
    task: str | None,
    *,
    img_size: int | tuple[int, int] | None,
    num_classes: int | None,
    class_names: list[str] | None,
) -> GFNetForSegmentation:
    """A loaded MODEL as a segmentation model: as it is, or a classifier under a new head."""
    if task == "classification":
        raise UsageError(
            "this MODEL is a segmentation model: load it without task='classification'",
            param="task",
        )
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if isinstance(model, GFNetForSegmentation):
        if img_size is not None:
            model.set_image_size(img_size)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes, class_names=class_names)
        elif class_names is not None:
            model.config = model.config.replace(class_names=list(class_names))
        return model
    if num_classes is None:
        raise UsageError(
            "a new segmentation head needs num_classes (150 for ADE20K) or class_names",
            param="num_classes",
        )
    return segmentation_from_classifier(
        model, num_classes=num_classes, class_names=class_names, img_size=img_size
    )


# ---------------------------------------------------------------------------- settings
def hub_org() -> str:
    """The Hub organization a zoo name's repository lives under (``GFNET_HUB_ORG``, else ours).

    Only consulted where the Hub is trusted for zoo names (:func:`zoo_source`).
    """
    return hub_org_override() or PROJECT_HUB_ORG


def zoo_repo_id(name: str) -> str:
    return f"{hub_org()}/{get_zoo_entry(name).name}"


# ---------------------------------------------------------------------------- resolving
def split_revision(model: str) -> tuple[str, str | None]:
    """``org/name@rev`` -> (``org/name``, ``rev``)."""
    if "@" in model:
        name, _, revision = model.partition("@")
        return name, revision or None
    return model, None


def resolve_model(
    model: str,
    revision: str | None = None,
    *,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
) -> Path:
    """The local MODEL folder for ``model``: a folder, ``org/name[@rev]`` or a zoo name.

    Hub repositories and zoo names are downloaded (or converted) on first use and come from
    the cache afterwards, also offline.
    """
    text = str(model).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise ConfigError(f"{path} is a folder without config.json: not a MODEL folder")
        return path
    name, revision = _revision(text, revision)
    options: dict[str, Any] = {
        "token": token,
        "force_download": force_download,
        "local_files_only": local_files_only,
        "cache_dir": cache_dir,
    }
    if is_zoo_name(name):
        return _resolve_zoo(get_zoo_entry(name), revision, **options)
    if _REPO_ID.match(name):
        return download_model(name, revision, **options)
    raise _not_a_model(text, path)


def resolve_config(model: str, revision: str | None = None) -> GFNetConfig:
    """A MODEL's architecture without its weights (``profile``, ``finetune --from-scratch``).

    A folder's ``config.json`` is read; a zoo name needs nothing downloaded (at a pinned
    revision, its Hub repository's ``config.json``); a Hub repository only its
    ``config.json``.
    """
    text = str(model).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        return GFNetConfig.load(path)
    name, revision = _revision(text, revision)
    if is_zoo_name(name):
        if revision is None:  # a zoo name's architecture is the package's own data
            return get_zoo_entry(name).config()
        source = zoo_source(name, revision)  # a revision needs a Hub organization named
        name, revision = source.location, source.revision
    if not _REPO_ID.match(name):
        raise _not_a_model(text, path)
    label = f"{name}@{revision}" if revision else name
    config_path = _fetch(
        name,
        CONFIG_NAME,
        revision,
        label=label,
        token=None,
        force_download=False,
        local_files_only=is_offline(),
        cache_dir=None,
    )
    try:
        return GFNetConfig.load(config_path)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def zoo_model_source(model: str, revision: str | None = None) -> ZooSource | None:
    """Where a zoo-name MODEL's weights come from now; ``None`` for folders and Hub ids."""
    text = str(model).strip()
    if Path(text).expanduser().is_dir():
        return None
    name, revision = _revision(text, revision)
    return zoo_source(name, revision) if is_zoo_name(name) else None


def _revision(text: str, revision: str | None) -> tuple[str, str | None]:
    """The name and the one revision a MODEL argument and a ``revision`` parameter give."""
    name, at_revision = split_revision(text)
    if at_revision and revision and at_revision != revision:
        raise UsageError(
            f"{text} pins {at_revision!r}, but revision is {revision!r}",
            param="revision",
        )
    return name, revision or at_revision


def _not_a_model(text: str, path: Path) -> ModelNotFoundError:
    if path.exists():
        return ModelNotFoundError(
            f"{path} is a file, not a MODEL folder: convert a checkpoint with `gfnet convert`"
        )
    return ModelNotFoundError(
        f"{text}: no such MODEL folder, and not a Hub repository id (org/name) or a zoo name "
        f"({', '.join(ZOO)})"
    )


def download(model: str, revision: str | None = None, *, force_download: bool = False) -> Path:
    """Resolve ``model`` to a local folder and check that it loads (``gfnet download``)."""
    folder = resolve_model(model, revision, force_download=force_download)
    check_model_folder(folder, label=str(model), hint=_refetch_hint(str(model), revision))
    return folder


def download_model(
    repo_id: str,
    revision: str | None = None,
    *,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
) -> Path:
    """Fetch a MODEL repository's files into the Hub cache; return its snapshot folder.

    The weights and card are fetched at the commit ``config.json`` came from, so the three
    files always belong together.
    """
    offline = local_files_only or is_offline()
    if offline and force_download:
        raise UsageError("cannot force a download while HF_HUB_OFFLINE is set")
    options: dict[str, Any] = {
        "token": token,
        "force_download": force_download,
        "local_files_only": offline,
        "cache_dir": cache_dir,
    }
    label = f"{repo_id}@{revision}" if revision else repo_id
    config_path = _fetch(repo_id, CONFIG_NAME, revision, label=label, **options)
    try:  # a config that cannot describe a GFNet is refused before its weights are fetched
        GFNetConfig.load(config_path)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    commit = config_path.parent.name
    _fetch(repo_id, WEIGHTS_NAME, commit, label=label, **options)
    try:
        _fetch(repo_id, CARD_NAME, commit, label=label, **options)
    except (HubFileMissingError, OfflineCacheMissError, NetworkError):
        logger.debug("%s has no model card", label)
    folder = config_path.parent
    check_model_folder(folder, label=label, hint=_refetch_hint(repo_id, revision))
    return folder


def _refetch_hint(model: str, revision: str | None) -> str:
    if Path(model).expanduser().is_dir():
        return REWRITE_HINT
    again = f"gfnet download {model}" + (f" --revision {revision}" if revision else "")
    return f"fetch it again with `{again} --force-download`, or fix the file in the repository"


def _fetch(
    repo_id: str,
    filename: str,
    revision: str | None,
    *,
    label: str,
    token: str | bool | None,
    force_download: bool,
    local_files_only: bool,
    cache_dir: str | Path | None,
) -> Path:
    """``hf_hub_download`` one file, with every failure turned into a one-line UsageError."""
    from huggingface_hub import hf_hub_download

    endpoint = hub_endpoint()
    if not local_files_only and not force_download:
        _check_reachable(repo_id, filename, revision, label=label, endpoint=endpoint,
                         token=token, cache_dir=cache_dir)  # fmt: skip
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir or hub_cache_dir(),
                endpoint=endpoint,
                token=token,
                force_download=force_download,
                local_files_only=local_files_only,
                library_name="gfnet-cli",
            )
        )
    except Exception as exc:  # translated; anything unknown is re-raised as is
        request = HubRequest(repo_id, endpoint, "download", filename, label, local_files_only)
        raise hub_error(exc, request) from None


def _check_reachable(
    repo_id: str,
    filename: str,
    revision: str | None,
    *,
    label: str,
    endpoint: str,
    token: str | bool | None,
    cache_dir: str | Path | None,
) -> None:
    """Fail at once, in one line, when the Hub cannot be reached and the file is not cached.

    ``hf_hub_download`` retries a failed request five times with back-off when it has no
    cached copy (about 25 s of "Retrying in 8s" lines); one request without retries tells
    the same thing. A cached file skips this: huggingface_hub then falls back to it.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir or hub_cache_dir(),
                                    revision=revision)  # fmt: skip
    if isinstance(cached, str):
        return
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    try:
        get_hf_file_metadata(url, token=token, endpoint=endpoint, library_name="gfnet-cli")
    except Exception as exc:  # anything but "no answer" is left to hf_hub_download's handling
        request = HubRequest(repo_id, endpoint, "download", filename, label)
        unreachable = unreachable_error(exc, request)
        if unreachable is not None:
            raise unreachable from None


# ---------------------------------------------------------------------------- zoo names
def _resolve_zoo(
    entry: ZooEntry,
    revision: str | None,
    *,
    token: str | bool | None,
    force_download: bool,
    local_files_only: bool,
    cache_dir: str | Path | None,
) -> Path:
    """A zoo model from the one source :func:`zoo_source` trusts for it now."""
    source = zoo_source(entry.name, revision)
    if source.kind == "hub":
        found = _zoo_from_hub(
            entry,
            source,
            pinned=revision is not None,
            token=token,
            force_download=force_download,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
        if found is not None:
            return found
    converted = converted_folder(entry.name)
    if not force_download and _looks_complete(converted):
        return converted
    return convert_zoo_checkpoint(entry, converted, reuse=not force_download)


def _zoo_from_hub(
    entry: ZooEntry, source: ZooSource, *, pinned: bool, **options: Any
) -> Path | None:
    """The zoo model's Hub repository; ``None`` where the authors' checkpoint should serve.

    The authors' checkpoint stands in only where no revision was asked for (``pinned``) and
    the repository does not exist or cannot be reached: a revision asked for is never swapped
    for other weights.
    """
    try:
        return download_model(source.location, source.revision, **options)
    except HubRepoNotFoundError:
        if pinned:
            raise
        logger.info("%s is not on the Hub: using the authors' checkpoint", source.location)
    except OfflineCacheMissError:
        if pinned or not _looks_complete(converted_folder(entry.name)):
            raise _offline_zoo_error(entry) from None
    except NetworkError as unreachable:
        if pinned:
            raise
        # Where the Hub is blocked the authors' own link may still answer.
        logger.warning("%s; trying the authors' link for %s", unreachable, entry.name)
        if _looks_complete(converted_folder(entry.name)):
            return None
        try:
            return convert_zoo_checkpoint(entry, converted_folder(entry.name), reuse=True)
        except NetworkError:
            raise NetworkError(
                f"{entry.name}: cannot reach the Hub ({hub_endpoint()}) nor the authors' link "
                f"({zoo_checkpoint_url(entry)}): check your connection or proxy"
            ) from None
    return None


def _looks_complete(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def _offline_zoo_error(entry: ZooEntry) -> OfflineCacheMissError:
    return OfflineCacheMissError(
        f"{entry.name} is not cached and HF_HUB_OFFLINE is set: run `gfnet download "
        f"{entry.name}` once online, or unset HF_HUB_OFFLINE"
    )


def convert_zoo_checkpoint(entry: ZooEntry, target: Path, *, reuse: bool = False) -> Path:
    """Download the authors' checkpoint, check it against its record, convert it into ``target``.

    The file's sha256 is recorded the first time (trust on first use); a later download that
    differs is refused (:class:`~gfnet_cli.hub.zoo_source.ChecksumMismatchError`) before it is
    read, and ``target`` is left as it was. All of it holds the zoo entry's lock
    (:func:`~gfnet_cli.hub.zoo_source.first_use_lock`), so the record always describes the
    file that was converted; with ``reuse``, a folder another process converted while this
    one waited is returned as it is.
    """
    if is_offline():
        raise _offline_zoo_error(entry)
    with first_use_lock(entry.name):
        if reuse and _looks_complete(target):
            return target
        return _convert_zoo_locked(entry, target)


def _convert_zoo_locked(entry: ZooEntry, target: Path) -> Path:
    url = zoo_checkpoint_url(entry)
    remove_stale_partials(download_path(url))  # a killed first use's half download
    logger.info("downloading %s from %s and converting it (once)", entry.name, url)
    try:
        result = convert_source(entry.name, target, arch=entry.name, overwrite=True)
        record_first_use(entry.name, result.sha256 or "", url, download_path(url).stat().st_size)
    except CheckpointError as exc:
        if isinstance(exc, ChecksumMismatchError):
            raise
        raise CheckpointError(
            f"the authors' checkpoint for {entry.name} ({url}) could not be converted: {exc}"
        ) from None
    except (NetworkError, DownloadError, HubAccessError) as exc:
        raise type(exc)(f"{entry.name} (the authors' checkpoint): {exc}") from None
    finally:
        # The raw pickle is not needed once converted, and a bad one must not be reused.
        download_path(url).unlink(missing_ok=True)
    return target


__all__ = [
    "ChecksumMismatchError",
    "CorruptModelError",
    "DownloadError",
    "GFNet",
    "GFNetForSegmentation",
    "HubAccessError",
    "HubFileMissingError",
    "HubRepoNotFoundError",
    "HubRevisionNotFoundError",
    "NetworkError",
    "OfflineCacheMissError",
    "cache_dir",
    "check_model_folder",
    "create_model",
    "download",
    "download_model",
    "download_url",
    "hub_org",
    "load_model",
    "resolve_config",
    "resolve_model",
    "safetensors_shapes",
    "zoo_checkpoint_url",
    "zoo_model_source",
    "zoo_repo_id",
    "zoo_source",
]
