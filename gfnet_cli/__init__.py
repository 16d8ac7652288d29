"""gfnet: use, fine-tune, profile and publish Global Filter Networks.

The command line (``gfnet``) is a thin layer over the functions exported here.
"""

from gfnet_cli.convert import convert_checkpoint
from gfnet_cli.engine.evaluate import evaluate
from gfnet_cli.errors import GFNetError, UsageError
from gfnet_cli.hub import resolve_model
from gfnet_cli.models import (
    GFNet,
    GFNetConfig,
    create_model,
    get_zoo_entry,
    list_models,
    load_model,
)
from gfnet_cli.predict import predict
from gfnet_cli.push import push_folder
from gfnet_cli.serialization import save_model
from gfnet_cli.zoo_info import model_table

__version__ = "0.1.0"


__all__ = [
    "GFNet",
    "GFNetConfig",
    "GFNetError",
    "UsageError",
    "__version__",
    "convert_checkpoint",
    "create_model",
    "evaluate",
    "get_zoo_entry",
    "list_models",
    "load_model",
    "model_table",
    "predict",
    "push_folder",
    "resolve_model",
    "save_model",
]
