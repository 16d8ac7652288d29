"""The files that let transformers load a MODEL folder, written beside our own.

- config.json gains ``model_type``, ``architectures``, ``auto_map``, ``id2label`` and
  ``label2id`` (:func:`transformers_keys`); gfnet reads past them
  (:data:`gfnet_cli.models.config.TRANSFORMERS_KEYS`).
- ``configuration_gfnet.py``, ``modeling_gfnet.py`` and ``image_processing_gfnet.py``: the
  remote code ``trust_remote_code=True`` runs. Each names one class of
  :mod:`gfnet_cli.hub.transformers_classes`, so the code a user trusts is a few lines and the
  model is this package's (docs/transformers.md).
- ``preprocessor_config.json``: the evaluation transform's settings, for
  ``AutoImageProcessor`` and ``pipeline`` (a segmentation model's: whole-image inference).

Classification and segmentation folders get the same code files (each names both models and
both processors); config.json's ``auto_map`` and ``preprocessor_config.json`` pick the task's.

Nothing here imports transformers: every writer (convert, finetune, ``save_pretrained``,
push) writes these files whether or not it is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gfnet_cli.data.transforms import pil_interpolation
from gfnet_cli.models.config import CONFIG_NAME, GFNetConfig, crop_size_to_resize

PREPROCESSOR_NAME = "preprocessor_config.json"
CONFIGURATION_FILE = "configuration_gfnet.py"
MODELING_FILE = "modeling_gfnet.py"
PROCESSOR_FILE = "image_processing_gfnet.py"
#: What a task's model is called in transformers, the auto class that loads it and the image
#: processor that feeds it (classes of transformers_classes, named in :data:`MODELING_CODE`
#: and :data:`PROCESSOR_CODE`). Tasks missing here get no transformers files.
TASKS: dict[str, tuple[str, str, str]] = {
    "classification": (
        "GFNetForImageClassification",
        "AutoModelForImageClassification",
        "GFNetImageProcessor",
    ),
    "segmentation": (
        "GFNetForSemanticSegmentation",
        "AutoModelForSemanticSegmentation",
        "GFNetSegmentationImageProcessor",
    ),
}

_IMPORT = """try:
    import gfnet_cli.hub.transformers_classes as gfnet
except ModuleNotFoundError as error:  # no gfnet-cli, or one from before transformers support
    if not (error.name or "").startswith("gfnet_cli"):
        raise
    raise ImportError(
        "this GFNet model runs on gfnet-cli with its transformers extra: install it from its "
        "repository (pip install '.[transformers]' in a clone; the model card links it)"
    ) from None
"""

_HEADER = '''"""GFNet for transformers ({what}), written by gfnet-cli.

The class below is gfnet-cli's own (gfnet_cli.hub.transformers_classes), named here so that
transformers can load this repository with trust_remote_code=True. Needs
gfnet-cli installed with its transformers extra, from its repository (it is not on a package
index yet): pip install '.[transformers]' in a clone.
"""
'''

CONFIGURATION_CODE = (
    _HEADER.format(what="the configuration")
    + "\n"
    + _IMPORT
    + """

class GFNetConfig(gfnet.GFNetConfig):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
"""
)

MODELING_CODE = (
    _HEADER.format(what="the models")
    + "\nfrom .configuration_gfnet import GFNetConfig\n\n"
    + _IMPORT
    + """

class GFNetForImageClassification(gfnet.GFNetForImageClassification):
    config_class = GFNetConfig


class GFNetForSemanticSegmentation(gfnet.GFNetForSemanticSegmentation):
    config_class = GFNetConfig
"""
)

PROCESSOR_CODE = (
    _HEADER.format(what="the image processor")
    + "\n"
    + _IMPORT
    + """

class GFNetImageProcessor(gfnet.GFNetImageProcessor):
    pass


class GFNetSegmentationImageProcessor(gfnet.GFNetSegmentationImageProcessor):
    pass
"""
)

CODE_FILES = {
    CONFIGURATION_FILE: CONFIGURATION_CODE,
    MODELING_FILE: MODELING_CODE,
    PROCESSOR_FILE: PROCESSOR_CODE,
}


def supports_transformers(config: GFNetConfig) -> bool:
    """Whether transformers can load the model ``config`` describes (its task is in
    :data:`TASKS`)."""
    return config.task in TASKS


def transformers_keys(config: GFNetConfig) -> dict[str, Any]:
    """The keys transformers needs in config.json to load the model ``config`` describes
    (none for a task transformers cannot load yet)."""
    if not supports_transformers(config):
        return {}
    model_class, auto_class, _ = TASKS[config.task]
    labels = config.labels
    return {
        "model_type": "gfnet",
        "architectures": [model_class],
        "auto_map": {
            "AutoConfig": f"{Path(CONFIGURATION_FILE).stem}.GFNetConfig",
            auto_class: f"{Path(MODELING_FILE).stem}.{model_class}",
        },
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def config_data(config: GFNetConfig) -> dict[str, Any]:
    """config.json's content: our fields, then transformers' keys."""
    return {**config.to_dict(), **transformers_keys(config)}


def preprocessor_config(config: GFNetConfig) -> dict[str, Any]:
    """``preprocessor_config.json``: the evaluation transform at the model's size.

    The keys are the stock processors' (``size.shortest_edge``, ``crop_size``, ``resample``,
    ``image_mean``, ``image_std``); :class:`GFNetImageProcessor` applies them exactly as
    ``gfnet predict`` does. A segmentation model's: :func:`segmentation_preprocessor_config`.
    """
    if config.is_segmentation:
        return segmentation_preprocessor_config(config)
    height, width = config.image_size
    return {
        **_processor_class(config),
        "size": {"shortest_edge": crop_size_to_resize(min(height, width), config.crop_pct)},
        "crop_size": {"height": height, "width": width},
        "resample": int(pil_interpolation(config.interpolation)),
        "image_mean": list(config.mean),
        "image_std": list(config.std),
    }


def segmentation_preprocessor_config(config: GFNetConfig) -> dict[str, Any]:
    """A segmentation model's ``preprocessor_config.json``: whole-image inference as
    ``gfnet predict`` runs it (the shorter side to the model's size, aspect kept, bilinear;
    mean/std), and ``do_reduce_labels`` as the model was trained (for masks given with
    ``segmentation_maps``)."""
    settings = config.segmentation
    return {
        **_processor_class(config),
        "size": {"shortest_edge": min(config.image_size)},
        "image_mean": list(config.mean),
        "image_std": list(config.std),
        "do_reduce_labels": bool(settings is not None and settings.reduce_labels),
    }


def _processor_class(config: GFNetConfig) -> dict[str, Any]:
    processor = TASKS[config.task][2]
    return {
        "image_processor_type": processor,
        "auto_map": {"AutoImageProcessor": f"{Path(PROCESSOR_FILE).stem}.{processor}"},
    }


def transformers_files(config: GFNetConfig) -> dict[str, str]:
    """Every file transformers needs beside config.json and the weights, by name."""
    if not supports_transformers(config):
        return {}
    files = dict(CODE_FILES)
    files[PREPROCESSOR_NAME] = to_json(preprocessor_config(config))
    return files


def missing_transformers_files(folder: str | Path, config: GFNetConfig) -> dict[str, str]:
    """What a folder written before transformers support lacks, by name (config.json too,
    when it lacks transformers' keys: the same file with them added). Empty for a folder
    that has them all."""
    folder = Path(folder)
    missing = {
        name: text
        for name, text in transformers_files(config).items()
        if not (folder / name).is_file()
    }
    data = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    needed = transformers_keys(config)
    if any(key not in data for key in needed):
        added = {key: value for key, value in needed.items() if key not in data}
        missing[CONFIG_NAME] = to_json({**data, **added})
    return missing


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"
