"""Data: opening images, preprocessing, and DATASET arguments."""

from gfnet_cli.data.datasets import ImageDataset, load_image_dataset
from gfnet_cli.data.images import ImageReadError, expand_inputs, open_image
from gfnet_cli.data.transforms import EvalTransform, eval_transform

__all__ = [
    "EvalTransform",
    "ImageDataset",
    "ImageReadError",
    "eval_transform",
    "expand_inputs",
    "load_image_dataset",
    "open_image",
]
