"""GFNet models: config, layers, the flat and pyramid networks, and the model zoo."""

from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.factory import create_model, load_model
from gfnet_cli.models.gfnet import GFNet, adapt_state_dict
from gfnet_cli.models.layers import GlobalFilter, resize_filter, resize_pos_embed
from gfnet_cli.models.zoo import ZOO, get_zoo_entry, list_models

__all__ = [
    "ZOO",
    "GFNet",
    "GFNetConfig",
    "GlobalFilter",
    "adapt_state_dict",
    "create_model",
    "get_zoo_entry",
    "list_models",
    "load_model",
    "resize_filter",
    "resize_pos_embed",
]
