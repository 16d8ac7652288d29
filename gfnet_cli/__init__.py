"""gfnet: use, fine-tune, profile and publish Global Filter Networks.

The command line (``gfnet``) is a thin layer over the functions exported here. They are
imported on first use (PEP 562), so ``import gfnet_cli`` and ``gfnet --help`` stay fast: torch,
huggingface_hub and datasets load only when a function that needs them is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gfnet_cli._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "GFNet": "gfnet_cli.hub",
    "GFNetConfig": "gfnet_cli.models.config",
    "GFNetError": "gfnet_cli.errors",
    "UsageError": "gfnet_cli.errors",
    "convert_checkpoint": "gfnet_cli.convert",
    "create_model": "gfnet_cli.hub",
    "embed": "gfnet_cli.embed",
    "evaluate": "gfnet_cli.engine.evaluate",
    "export_model": "gfnet_cli.export",
    "filters": "gfnet_cli.analysis.filters",
    "get_zoo_entry": "gfnet_cli.models.zoo",
    "list_models": "gfnet_cli.models.zoo",
    "load_model": "gfnet_cli.hub",
    "model_table": "gfnet_cli.profiling",
    "predict": "gfnet_cli.predict",
    "push_folder": "gfnet_cli.push",
    "resolve_model": "gfnet_cli.hub",
    "robustness": "gfnet_cli.analysis.robustness",
    "save_model": "gfnet_cli.serialization",
}

__all__ = [
    "GFNet",
    "GFNetConfig",
    "GFNetError",
    "UsageError",
    "__version__",
    "convert_checkpoint",
    "create_model",
    "embed",
    "evaluate",
    "export_model",
    "filters",
    "get_zoo_entry",
    "list_models",
    "load_model",
    "model_table",
    "predict",
    "push_folder",
    "resolve_model",
    "robustness",
    "save_model",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from gfnet_cli.analysis.filters import filters
    from gfnet_cli.analysis.robustness import robustness
    from gfnet_cli.convert import convert_checkpoint
    from gfnet_cli.embed import embed
    from gfnet_cli.engine.evaluate import evaluate
    from gfnet_cli.errors import GFNetError, UsageError
    from gfnet_cli.export import export_model
    from gfnet_cli.hub import GFNet, create_model, load_model, resolve_model
    from gfnet_cli.models.config import GFNetConfig
    from gfnet_cli.models.zoo import get_zoo_entry, list_models
    from gfnet_cli.predict import predict
    from gfnet_cli.profiling import model_table
    from gfnet_cli.push import push_folder
    from gfnet_cli.serialization import save_model
