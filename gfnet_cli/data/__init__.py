"""Data: opening images, preprocessing, and DATASET arguments.

The names below are imported on first use (PEP 562), so ``gfnet_cli.data.images`` alone
(``predict`` on files) does not load the dataset machinery. Code inside the package imports
from the defining modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gfnet_cli._lazy import lazy_exports

# public name -> the module that defines it
_EXPORTS = {
    "EvalTransform": "gfnet_cli.data.transforms",
    "ImageDataset": "gfnet_cli.data.datasets",
    "ImageReadError": "gfnet_cli.data.images",
    "eval_transform": "gfnet_cli.data.transforms",
    "expand_inputs": "gfnet_cli.data.images",
    "load_image_dataset": "gfnet_cli.data.datasets",
    "open_image": "gfnet_cli.data.images",
}

__all__ = [
    "EvalTransform",
    "ImageDataset",
    "ImageReadError",
    "eval_transform",
    "expand_inputs",
    "load_image_dataset",
    "open_image",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from gfnet_cli.data.datasets import ImageDataset, load_image_dataset
    from gfnet_cli.data.images import ImageReadError, expand_inputs, open_image
    from gfnet_cli.data.transforms import EvalTransform, eval_transform
