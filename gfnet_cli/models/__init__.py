"""GFNet models: config, layers, the flat and pyramid networks, and the model zoo.

The bottom of the package: torch, the standard library, ``gfnet_cli.errors`` and
``gfnet_cli.labels`` only. Files, weights and the Hub live above (``gfnet_cli.hub``).
"""

from gfnet_cli.models.config import GFNetConfig, SegmentationConfig
from gfnet_cli.models.factory import build_model, model_config
from gfnet_cli.models.features import FeatureExtractor, FeatureIndexError, FeatureInfo
from gfnet_cli.models.gfnet import GFNetArchitecture, adapt_state_dict
from gfnet_cli.models.layers import GlobalFilter, resize_filter, resize_pos_embed
from gfnet_cli.models.segmentation import GFNetForSegmentation, sync_batchnorm
from gfnet_cli.models.zoo import ZOO, get_zoo_entry, list_models

__all__ = [
    "ZOO",
    "FeatureExtractor",
    "FeatureIndexError",
    "FeatureInfo",
    "GFNet",
    "GFNetConfig",
    "GFNetForSegmentation",
    "GlobalFilter",
    "SegmentationConfig",
    "adapt_state_dict",
    "build_model",
    "get_zoo_entry",
    "list_models",
    "model_config",
    "resize_filter",
    "resize_pos_embed",
    "sync_batchnorm",
]
