"""Class-name lists: ImageNet-1k and ADE20K (shipped with the package) and user label files."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from gfnet_cli.errors import UsageError


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
    """Class names from a file: a JSON list (of names or of ``{"name": ...}``) or one per line."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"label file {file} not found")
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"label file {file} is not valid JSON ({exc})") from None
        if isinstance(data, dict):  # {"0": "cat", ...} as in id2label
            try:
                data = [data[k] for k in sorted(data, key=int)]
            except (ValueError, TypeError):
                raise UsageError(f"label file {file}: keys must be class indices") from None
        if not isinstance(data, list):
            raise UsageError(f"label file {file} must hold a JSON list of class names")
        names = [item["name"] if isinstance(item, dict) else str(item) for item in data]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise UsageError(f"label file {file} lists no class names")
    return names


def normalize_class_name(name: str) -> str:
    """A class name as compared across datasets and models: case, ``_`` and ``-`` aside."""
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())
