"""Data: opening images, preprocessing, and DATASET arguments.

The names below are imported on first use (PEP 562), so ``gfnet_cli.data.images`` alone
(``predict`` on files) does not load the dataset machinery. Code inside the package imports
from the defining modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gfnet_cli._lazy import lazy_exports

# the one list of public names: module -> the names it defines (``__all__`` is derived)
_EXPORTS = {
    "gfnet_cli.data.datasets": (
        "ImageDataset",
        "load_image_dataset",
    ),
    "gfnet_cli.data.images": (
        "ImageReadError",
        "expand_inputs",
        "open_image",
    ),
    "gfnet_cli.data.transforms": (
        "EvalTransform",
        "eval_transform",
    ),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from gfnet_cli.data.datasets import ImageDataset, load_image_dataset
    from gfnet_cli.data.images import ImageReadError, expand_inputs, open_image
    from gfnet_cli.data.transforms import EvalTransform, eval_transform
