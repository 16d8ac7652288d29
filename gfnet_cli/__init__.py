"""gfnet: use, fine-tune, profile and publish Global Filter Networks.

The command line (``gfnet``) is a thin layer over the functions exported here. They are
imported on first use (PEP 562), so ``import gfnet_cli`` and ``gfnet --help`` stay fast: torch,
huggingface_hub and datasets load only when a function that needs them is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gfnet_cli._lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["__version__"]  # and every name of _EXPORTS, added by lazy_exports

# the one list of public names: module -> the names it defines (``__all__`` is derived)
_EXPORTS = {
    "gfnet_cli.analysis.filters": ("filters",),
    "gfnet_cli.analysis.robustness": ("robustness",),
    "gfnet_cli.commands.embed": ("embed",),
    "gfnet_cli.commands.evaluate": ("evaluate",),
    "gfnet_cli.commands.export": ("export_model",),
    "gfnet_cli.commands.predict": ("predict",),
    "gfnet_cli.commands.profile": ("model_table", "profile"),
    "gfnet_cli.engine.train": ("TrainConfig", "finetune"),
    "gfnet_cli.errors": (
        "GFNetError",
        "UsageError",
    ),
    "gfnet_cli.hub.convert": ("convert_checkpoint",),
    "gfnet_cli.hub.push": ("push_folder",),
    "gfnet_cli.hub.resolve": (
        "GFNet",
        "create_model",
        "load_model",
        "resolve_model",
    ),
    "gfnet_cli.hub.serialization": ("save_model",),
    "gfnet_cli.models.config": ("GFNetConfig",),
    "gfnet_cli.models.zoo": (
        "get_zoo_entry",
        "list_models",
    ),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from gfnet_cli.analysis.filters import filters
    from gfnet_cli.analysis.robustness import robustness
    from gfnet_cli.commands.embed import embed
    from gfnet_cli.commands.evaluate import evaluate
    from gfnet_cli.commands.export import export_model
    from gfnet_cli.commands.predict import predict
    from gfnet_cli.commands.profile import model_table, profile
    from gfnet_cli.engine.train import TrainConfig, finetune
    from gfnet_cli.errors import GFNetError, UsageError
    from gfnet_cli.hub.convert import convert_checkpoint
    from gfnet_cli.hub.push import push_folder
    from gfnet_cli.hub.resolve import GFNet, create_model, load_model, resolve_model
    from gfnet_cli.hub.serialization import save_model
    from gfnet_cli.models.config import GFNetConfig
    from gfnet_cli.models.zoo import get_zoo_entry, list_models
