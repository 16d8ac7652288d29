"""Class-name lists: ImageNet-1k and ADE20K (shipped with the package) and user label files."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from gfnet_cli.errors import UsageError

#: the most classes a model may have (its config.json holds their names)
MAX_CLASSES = 100_000
#: the longest class name, in characters
MAX_CLASS_NAME = 1000
#: a label file larger than this cannot become a loadable config.json: refused unread
MAX_LABEL_FILE_BYTES = 4 * 1024 * 1024


@lru_cache(maxsize=1)
def _imagenet_entries() -> tuple[dict, ...]:
    text = resources.files("gfnet_cli").joinpath("resources", "imagenet1k_classes.json").read_text()
    return tuple(json.loads(text))


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in model-output order."""
    return [entry["name"] for entry in _imagenet_entries()]


@lru_cache(maxsize=1)
def _ade20k_names() -> tuple[str, ...]:
    text = resources.files("gfnet_cli").joinpath("resources", "ade20k.json").read_text()
    return tuple(json.loads(text))


def ade20k_class_names() -> list[str]:
    """ADE20K's 150 classes (SceneParse150) in label order, after ``reduce_labels``.

    mmsegmentation's ``ADE20KDataset`` list (scripts/ade20k_classes.py extracts it): index 0
    is "wall", i.e. the mask value 1 of the raw annotations.
    """
    return list(_ade20k_names())


def imagenet_synsets() -> list[str]:
    return [entry["synset"] for entry in _imagenet_entries()]


def read_label_file(path: str | Path) -> list[str]:
    """Class names from a file: a JSON list (of names or of ``{"name": ...}``), a JSON
    ``{"0": name, ...}`` (id2label, every index once), or one name per line.

    Bounded before it is read (:data:`MAX_LABEL_FILE_BYTES`, :data:`MAX_CLASSES` names of at
    most :data:`MAX_CLASS_NAME` characters): what a model's config.json can hold.
    """
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"label file {file} not found (or not a regular file)")
    size = file.stat().st_size
    if size > MAX_LABEL_FILE_BYTES:
        raise UsageError(f"label file {file} is {size:,} bytes; a label file is at most "
                         f"{MAX_LABEL_FILE_BYTES:,} ({MAX_CLASSES:,} class names)")  # fmt: skip
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"label file {file} is not UTF-8 text (byte {exc.start})") from None
    if file.suffix.lower() == ".json":
        names = _json_names(file, text)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise UsageError(f"label file {file} lists no class names")
    check_class_names(names, f"label file {file}")
    return names


def _json_names(file: Path, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"label file {file} is not valid JSON ({exc})") from None
    if isinstance(data, dict):  # {"0": "cat", ...} as in id2label
        try:
            return names_from_id2label(data)
        except ValueError as exc:
            raise UsageError(f"label file {file}: {exc}") from None
    if not isinstance(data, list):
        raise UsageError(f"label file {file} must hold a JSON list of class names")
    names = []
    for item in data:
        if isinstance(item, dict) and "name" not in item:
            raise UsageError(f"label file {file}: entry {len(names)} has no \"name\"")
        names.append(str(item["name"]) if isinstance(item, dict) else str(item))
    return names


def names_from_id2label(mapping: object) -> list[str]:
    """``{"0": "wall", "1": "building"}`` as a list in index order: every index from 0 to
    N-1 once (a gap would shift every later class onto the wrong index)."""
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError("id2label must be a non-empty JSON object of index -> name")
    try:
        by_index = {int(key): str(value) for key, value in mapping.items()}
    except (TypeError, ValueError):
        raise ValueError("id2label's keys must be class indices (0, 1, ...)") from None
    if sorted(by_index) != list(range(len(mapping))):
        raise ValueError("id2label's indices must be 0..N-1, each once")
    return [by_index[index] for index in range(len(by_index))]


def check_class_names(names: list[str], where: str) -> None:
    """At most :data:`MAX_CLASSES` names of at most :data:`MAX_CLASS_NAME` characters."""
    if len(names) > MAX_CLASSES:
        raise UsageError(f"{where} lists {len(names):,} class names; the most is {MAX_CLASSES:,}")
    longest = max(names, key=len)
    if len(longest) > MAX_CLASS_NAME:
        raise UsageError(f"{where}: a class name of {len(longest):,} characters; the longest "
                         f"allowed is {MAX_CLASS_NAME:,}")  # fmt: skip


def normalize_class_name(name: str) -> str:
    """A class name as compared across datasets and models: case, ``_`` and ``-`` aside."""
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())
