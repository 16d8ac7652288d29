"""MODEL folders on disk: ``config.json`` + ``model.safetensors`` (+ ``README.md`` card), and
the files transformers loads them with (:mod:`gfnet_cli.hub.remote_code`).

Weights are only ever written as safetensors; every file is written to a temporary name and
renamed into place, so an interrupted write never leaves a half-written file that a later run
would take as valid. A folder is checked from its safetensors header (complete, shapes match
the config) before anything trusts it, without reading the tensors.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch.utils._pytree import tree_map_only

from gfnet_cli.errors import ConfigError, UsageError, first_line
from gfnet_cli.hub.locks import writing
from gfnet_cli.hub.remote_code import config_data, to_json, transformers_files
from gfnet_cli.models.config import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, GFNetConfig
from gfnet_cli.models.factory import build_model
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.models.segmentation import GFNetForSegmentation

ModelT = TypeVar("ModelT", bound=GFNetArchitecture)
REWRITE_HINT = "write the MODEL folder again (gfnet convert / finetune)"
# transformers saves the model under this attribute (transformers_classes): its checkpoint
# keys carry the prefix, which loading reads past.
TRANSFORMERS_PREFIX = "gfnet."


class CorruptModelError(ConfigError):
    """A MODEL folder's weights are truncated or corrupt."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_file(tmp: Path, path: Path) -> None:
    """Give a finished temporary file the usual permissions and rename it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` with Python's file writer: a full disk raises OSError (ENOSPC), where
    some native writers abort the process or bury the errno in their own message."""
    with open(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
        tmp = Path(handle.name)
    try:
        publish_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_output_file(
    path: str | Path | None,
    param: str = "output",
    *,
    overwrite: bool,
    suffixes: tuple[str, ...] = (),
    parent_must_exist: bool = True,
) -> Path | None:
    """``path`` as a Path once it may be written, checked before any work is done.

    Refused: a suffix outside ``suffixes`` (when given), a folder, a missing parent folder
    (unless the writer makes it), and an existing file unless ``overwrite``: a result is
    never lost to a repeated command. ``None`` passes through (nothing to write).
    """
    if path is None:
        return None
    path = Path(path).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(
            f"{param} must end in {' or '.join(suffixes)}, got {str(path)!r}", param=param
        )
    if path.is_dir():
        raise UsageError(f"{param} {path} is a folder: name the file to write", param=param)
    if parent_must_exist and not path.parent.is_dir():
        raise UsageError(f"{param} {path}: folder {path.parent} does not exist", param=param)
    if path.exists() and not overwrite:
        raise UsageError(
            f"{param} {path} already exists: choose another name or pass overwrite",
            param=(param, "overwrite"),
        )
    return path


def to_host(state: Any) -> Any:
    """``state`` (nested dicts/lists of tensors and plain values) with every tensor on the CPU.

    ``torch.save`` or safetensors of GPU tensors copy each to the host and wait for it: one
    device sync per parameter (and optimizer moment). Here every copy is queued
    asynchronously (into pinned memory, where the device supports it) and the host waits
    once, per device: checkpoints and the best MODEL of each epoch.
    """
    devices: set[torch.device] = set()

    def move(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type == "cpu":
            return tensor
        devices.add(tensor.device)
        return tensor.detach().to("cpu", non_blocking=True)

    moved = tree_map_only(torch.Tensor, move, state)
    for device in devices:
        torch.accelerator.synchronize(device)
    return moved


def save_weights(
    state_dict: dict[str, torch.Tensor], path: Path, metadata: dict | None = None
) -> None:
    """Write tensors as safetensors via a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {k: v.contiguous() for k, v in to_host(state_dict).items()}
    # Serialized here and written by Python: a full disk is an OSError (ENOSPC) to report.
    data = save(tensors, metadata={"format": "pt", **(metadata or {})})
    try:
        write_bytes(tmp, data)
        publish_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model(
    model: GFNetArchitecture | GFNetForSegmentation, directory: str | Path, card: str | None = None
) -> Path:
    """Write ``model`` into ``directory`` as a MODEL folder (files replaced atomically)."""
    if getattr(model, "pruned", False):
        raise UsageError(
            "this model was cut by prune_intermediate_layers: its weights no longer match its "
            "config, so a MODEL folder of it could not be loaded; save the model before "
            "pruning (or save its state_dict with safetensors yourself)"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model.state_dict(), directory / WEIGHTS_NAME)
    write_text_atomic(directory / CONFIG_NAME, to_json(config_data(model.config)))
    for name, text in transformers_files(model.config).items():
        write_text_atomic(directory / name, text)
    if card is not None:
        write_text_atomic(directory / CARD_NAME, card)
    return directory


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: a MODEL folder needs a model.safetensors")
    try:
        return without_transformers_prefix(load_file(str(path)))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"{path} is not a readable safetensors file ({first_line(exc)}); "
            "it may be truncated or corrupt: download or convert it again"
        ) from None


def without_transformers_prefix(tensors: dict[str, Any]) -> dict[str, Any]:
    """Keys as gfnet names them: transformers' ``gfnet.`` prefix dropped where every key has it."""
    if tensors and all(key.startswith(TRANSFORMERS_PREFIX) for key in tensors):
        return {key[len(TRANSFORMERS_PREFIX) :]: value for key, value in tensors.items()}
    return tensors


def load_model_folder(
    directory: str | Path,
    *,
    img_size: int | tuple[int, int] | None = None,
    device: str | torch.device | None = None,
    model_class: type[ModelT] = GFNetArchitecture,  # type: ignore[assignment]
) -> ModelT:
    """Build the model a MODEL folder describes and load its weights (strictly), eval mode.

    ``model_class`` is what is built: the plain :class:`GFNet` or a subclass (the Hub-aware
    ``gfnet_cli.GFNet``); a segmentation folder gives a :class:`GFNetForSegmentation`.
    """
    directory = Path(directory)
    config = GFNetConfig.load(directory)
    state_dict = load_weights(directory / WEIGHTS_NAME)
    model = model_from_state_dict(
        config, state_dict, source=str(directory), model_class=model_class
    )
    if img_size is not None:
        model.set_image_size(img_size)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def model_from_state_dict(
    config: GFNetConfig,
    state_dict: dict[str, torch.Tensor],
    source: str = "weights",
    model_class: type[ModelT] = GFNetArchitecture,  # type: ignore[assignment]
) -> ModelT:
    """A GFNet from ``config`` holding ``state_dict``; a clear error when the two disagree.

    A segmentation ``config`` builds a :class:`GFNetForSegmentation` (or ``model_class``
    where that is one).
    """
    if config.is_segmentation and not issubclass(model_class, GFNetForSegmentation):
        model_class = GFNetForSegmentation  # type: ignore[assignment]
    # Built on the meta device: no time spent initializing weights that are replaced anyway.
    with torch.device("meta"):
        model = model_class(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(expected, state_dict, source)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model


def check_state_dict(
    expected: dict[str, tuple[int, ...]], state_dict: dict[str, torch.Tensor], source: str
) -> None:
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_sample(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_sample(unexpected)})")
        raise ConfigError(f"{source}: config and weights disagree: {'; '.join(parts)}")
    for key, shape in expected.items():
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"{source}: {key} is not a tensor")
        if tuple(value.shape) != shape:
            raise ConfigError(
                f"{source}: config and weights disagree: {key} has shape "
                f"{tuple(value.shape)}, the config implies {shape}"
            )


def _sample(keys: list[str], count: int = 3) -> str:
    shown = ", ".join(keys[:count])
    return shown + (", ..." if len(keys) > count else "")


def check_output_dir(
    target: str | Path, *, overwrite: bool = False, param: str = "output_dir"
) -> Path:
    """``target`` as a Path once a MODEL folder may be written there, checked before any
    work: a file, or a non-empty folder without ``overwrite``, is refused."""
    target = Path(target).expanduser()
    if target.exists() and not target.is_dir():
        raise UsageError(f"{param} {target} exists and is not a folder", param=param)
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise UsageError(
            f"{param} {target} already exists and is not empty: choose another folder or pass "
            "overwrite",
            param=(param, "overwrite"),
        )
    return target


@contextlib.contextmanager
def atomic_directory(
    target: str | Path, overwrite: bool = False, param: str = "output_dir"
) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` only if the block succeeds.

    Refuses to touch a non-empty ``target`` unless ``overwrite``: an existing folder is only
    removed after its replacement is complete. ``target``'s lock is held throughout
    (:func:`gfnet_cli.hub.locks.writing`): a second writer is refused at once, or, once the
    first is done, finds the folder it wrote and is refused as well; partial folders of a
    killed writer are removed first.
    """
    target = check_output_dir(target, overwrite=overwrite, param=param)
    with writing(target, param=param):
        check_output_dir(target, overwrite=overwrite, param=param)  # written meanwhile?
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        )
        os.chmod(staging, 0o777 & ~_umask())
        try:
            yield staging
            backup = None
            if target.exists():
                backup = target.with_name(f".{target.name}.old.partial")
                os.replace(target, backup)
            os.replace(staging, target)
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------- checking
def check_model_folder(
    folder: str | Path, label: str | None = None, hint: str | None = None
) -> GFNetConfig:
    """Check a MODEL folder without loading its tensors: config valid, weights intact and
    matching the config. Returns the config. ``hint`` says how to get a good copy."""
    folder = Path(folder)
    label = label or str(folder)
    try:
        config = GFNetConfig.load(folder)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}" + (f"; {hint}" if hint else "")) from None
    shapes = safetensors_shapes(folder / WEIGHTS_NAME, label=label, hint=hint)
    # Meta tensors carry the shapes without reading (or allocating) any weights.
    placeholders = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    check_state_dict(_expected_shapes(config), placeholders, label)
    return config


def safetensors_shapes(
    path: Path, label: str | None = None, hint: str | None = None
) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header, after checking the file is complete.

    safetensors itself reads and checks the header (at most 100 MB of JSON, offsets that
    tile the data exactly up to the end of the file, shapes that match their byte ranges);
    the file is memory-mapped, and no tensor is read.
    """
    label = label or str(path)
    hint = hint or REWRITE_HINT
    if not path.is_file():
        raise ConfigError(f"{label}: {WEIGHTS_NAME} not found: a MODEL folder needs one")
    try:
        with safe_open(str(path), framework="pt") as weights:
            shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptModelError(
            f"{label}: {WEIGHTS_NAME} is truncated or corrupt ({first_line(exc, 200)}): {hint}"
        ) from None
    return without_transformers_prefix(shapes)


def count_parameters(shapes: dict[str, tuple[int, ...]]) -> int:
    """Number of values in tensors of these shapes (a model's parameter count)."""
    return sum(math.prod(shape) for shape in shapes.values())


def _expected_shapes(config: GFNetConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        skeleton = build_model(config)
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def save_json(document: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``document`` as indented JSON to ``path``: refused when taken unless ``overwrite``,
    under the file's lock (stale partial files of an interrupted write removed), atomically."""
    checked = check_output_file(path, overwrite=overwrite, parent_must_exist=False)
    assert checked is not None
    with writing(checked, param="output"):
        check_output_file(checked, overwrite=overwrite, parent_must_exist=False)
        write_text_atomic(checked, json.dumps(document, indent=2) + "\n")
    return checked
