"""How every ``gfnet CMD --help`` reads: like git's or ``hf``'s, without type noise.

:class:`GFNetCommand` is the class of every command (set once in ``main.py``): a usage line
``gfnet CMD [OPTIONS] IMAGE...``, flags without a value placeholder, values named for what
they hold (``N``, ``NUM``, ``PATH``, ``TEXT``, or their choices), and options grouped in
panels by what they are about. The groups are looked up by parameter name, so a new option
joins its group by being named like its neighbours; an unknown name stays under "Options".
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperOption

_PLACEHOLDERS = {int: "N", float: "NUM", str: "TEXT"}
# Values named for what they are, whatever their Python type (a path or a str).
_NAMED = {"plot": "FILE", "output": "FILE", "data": "FILE", "output_dir": "DIR"}

# Parameter name -> the help panel it is shown in.
_PANELS = {
    "Model": (
        "model", "revision", "img_size", "from_scratch", "new_head", "patch_size", "embed_dim",
        "depth", "crop_pct", "drop_path", "arch", "use_ema", "labels",
    ),
    "Data": (
        "dataset", "dataset_config", "split", "train_split", "eval_split", "test_split",
        "validation_split_percentage", "image_column", "label_column", "streaming",
        "shuffle_buffer", "max_samples", "label_order",
    ),
    "Schedule": (
        "recipe", "epochs", "max_steps", "accumulate", "lr", "lr_base_batch",
        "min_lr", "warmup_lr", "warmup_epochs",
    ),
    "Optimization": (
        "weight_decay", "decay_all", "label_smoothing", "eval_mode", "clip_grad", "ema", "seed",
    ),
    "Augmentation": (
        "no_augment", "crop_scale", "hflip", "randaugment", "color_jitter", "reprob", "mixup",
        "cutmix", "mix_prob", "mix_switch_prob",
    ),
    "Runtime": (
        "device", "precision", "batch_size", "num_workers", "compile_model", "grad_checkpointing",
        "deterministic", "filter_form", "prepare_timeout", "warmup", "repeats", "no_memory",
        "memory_limit",
    ),
    "Output": (
        "output_dir", "output", "as_json", "print_config", "plot", "overwrite", "resume",
        "checkpoint_every", "log_every", "push_to", "data",
    ),
}  # fmt: skip
GROUPED_FROM = 10  # commands with more options than this show them in panels
PANEL_OF = {name: panel for panel, names in _PANELS.items() for name in names}


def placeholder(param: TyperOption | TyperArgument) -> str | None:
    """What an option's value is called in help (None: a flag, which takes none)."""
    if isinstance(param, TyperOption) and (param.is_flag or param.count):
        return None
    if param.name in _NAMED:
        return _NAMED[param.name]
    descriptor = param.type_descriptor
    if descriptor.is_choice and descriptor.choices:
        return "|".join(str(getattr(c, "value", c)) for c in descriptor.choices)
    if descriptor.is_path:
        return "PATH"
    annotation: Any = descriptor.annotation
    element = getattr(annotation, "__args__", (annotation,))[0] if descriptor.is_list else None
    return _PLACEHOLDERS.get(element or annotation, "TEXT")


class _PlainArgument(TyperArgument):
    """An argument whose help row shows its name only (``IMAGE...``), not ``<str>``."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class GFNetCommand(TyperCommand):
    """A typer command whose help reads like git's: see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.metavar = param.metavar or (param.name or "").upper()
                param.__class__ = _PlainArgument
            elif isinstance(param, TyperOption):
                if param.metavar is None:
                    param.metavar = placeholder(param) or ""
                if param.rich_help_panel is None and len(self.params) > GROUPED_FROM:
                    param.rich_help_panel = PANEL_OF.get(param.name or "")

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""  # a flag, like the others
        return option

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS] SOURCE OUT_DIR`` / ``[OPTIONS] IMAGE...``: no braces, one style."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "").upper()
                name += "..." if param.nargs != 1 else ""
                pieces.append(name if param.required else f"[{name}]")
        return pieces
