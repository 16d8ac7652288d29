"""Turn the authors' ``.pth`` checkpoints into MODEL folders, without running pickled code.

The authors' files are pickles: a dict with ``model`` (maybe ``model_ema``), ``optimizer``,
``epoch`` and an ``argparse.Namespace`` of training arguments. We read them with PyTorch's
``weights_only`` unpickler, which only rebuilds tensors, containers and an allow-list of
plain classes, then infer the architecture from tensor shapes alone (the saved arguments are
unreliable: a 64-pixel model may record ``input_size=224``).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import pickletools
import re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gfnet_cli.errors import CheckpointError, UsageError
from gfnet_cli.hub.cache import download_url
from gfnet_cli.hub.card import model_card
from gfnet_cli.hub.serialization import (
    atomic_directory,
    check_output_dir,
    load_weights,
    model_from_state_dict,
    save_model,
)
from gfnet_cli.hub.zoo_source import (
    ZOO_MIRROR_ENV,
    check_against_record,
    file_sha256,
    first_use_lock,
    zoo_checkpoint_url,
)
from gfnet_cli.labels import imagenet_class_names, read_label_file
from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.zoo import ZOO, get_zoo_entry, match_architecture

logger = logging.getLogger(__name__)

# Plain classes the authors' checkpoints carry besides tensors; none can run code.
_SAFE_GLOBALS: list[Any] = [argparse.Namespace]


@dataclass
class ConversionResult:
    output_dir: Path
    config: GFNetConfig
    num_params: int
    source: str
    used_ema: bool
    #: the checkpoint file's sha256 (what docs/trust.md pins for zoo names)
    sha256: str | None = None


# ---------------------------------------------------------------------------- reading
def read_checkpoint(path: str | Path) -> Any:
    """Unpickle a checkpoint with the weights-only unpickler (no arbitrary code runs)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty")
    if path.suffix == ".safetensors":
        return load_weights(path)
    try:
        with torch.serialization.safe_globals(_safe_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", message)
        found = found or _code_reference(path)
        if found:
            raise CheckpointError(
                f"{path}: refusing to load: the pickle references {found.group(1)}, which could "
                "run code; only checkpoints of tensors and plain values are read"
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: {describe_content(path)}"
        ) from None
    except Exception:  # the unpickler raises many types on garbage; none is the user's bug
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: {describe_content(path)}"
        ) from None


_PLAIN_MODULES = ("torch", "collections", "argparse", "numpy", "_codecs", "builtins.set")


def _code_reference(path: Path) -> re.Match | None:
    """Name a global a plain pickle would import that is not tensor/container plumbing.

    Reads opcodes only (``pickletools``); nothing is imported or called.
    """
    try:
        data = path.read_bytes()
        if data[:2] == b"PK":
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and "UNICODE" in opcode.name:
                strings = (strings + [arg])[-2:]
            reference = None
            if opcode.name == "GLOBAL":
                reference = str(arg).replace(" ", ".")
            elif opcode.name == "STACK_GLOBAL" and len(strings) == 2:
                reference = ".".join(strings)
            if reference and not reference.startswith(_PLAIN_MODULES):
                return re.match(r"(.*)", reference)
    except Exception:  # an unreadable pickle simply has nothing to name
        return None
    return None


def _safe_globals() -> list[Any]:
    extra: list[Any] = []
    try:  # numpy scalars sometimes appear in saved training arguments
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        extra += [np.dtype, core.multiarray.scalar]
        extra += [type(np.dtype("float64")), type(np.dtype("int64")), type(np.dtype("float32"))]
    except (ImportError, AttributeError):
        pass
    return _SAFE_GLOBALS + extra


def extract_state_dict(
    checkpoint: Any, use_ema: bool = False
) -> tuple[dict[str, torch.Tensor], bool]:
    """The model's state dict inside a checkpoint, with any ``module.`` prefix removed."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"the checkpoint holds a {type(checkpoint).__name__}, "
            "not a state dict or a dict with 'model'"
        )
    used_ema = False
    if use_ema:
        if not isinstance(checkpoint.get("model_ema"), dict) or not checkpoint["model_ema"]:
            raise CheckpointError("--use-ema: the checkpoint has no 'model_ema' weights")
        state = checkpoint["model_ema"]
        used_ema = True
    elif isinstance(checkpoint.get("model"), dict):
        state = checkpoint["model"]
    elif isinstance(checkpoint.get("state_dict"), dict):
        state = checkpoint["state_dict"]
    elif isinstance(checkpoint.get("model_ema"), dict) and checkpoint["model_ema"]:
        # Only the EMA weights were kept (some training scripts save just those).
        logger.info("the checkpoint holds only 'model_ema' weights: using them")
        state = checkpoint["model_ema"]
        used_ema = True
    else:
        state = checkpoint
    tensors = OrderedDict()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            if state is checkpoint:
                continue  # stray metadata beside a bare state dict
            raise CheckpointError(f"the checkpoint's weights hold a non-tensor under {key!r}")
        _check_storage(str(key), value)
        tensors[_strip_prefix(str(key))] = value
    if not tensors:
        raise CheckpointError("the checkpoint holds no tensors")
    return tensors, used_ema


def _check_storage(key: str, tensor: torch.Tensor) -> None:
    """Refuse a tensor that claims more values than its file stores.

    A pickle can hold an expanded view (stride 0) or overlapping strides: 100 KB on disk that
    becomes gigabytes once a MODEL folder is written. Real weights never share values that way.
    """
    needed = tensor.numel() * tensor.element_size()
    if needed > tensor.untyped_storage().nbytes():
        raise CheckpointError(
            f"the checkpoint stores {key!r} ({'x'.join(map(str, tensor.shape))}) as a view of "
            f"{tensor.untyped_storage().nbytes():,} bytes (expanded or overlapping strides); "
            "refusing to materialise it: save real tensors (.contiguous()) instead"
        )


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod.", "model."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


# ---------------------------------------------------------------------------- inference
def infer_config(state_dict: dict[str, torch.Tensor]) -> GFNetConfig:
    """The architecture a GFNet state dict describes, from its tensor shapes alone."""
    if "patch_embed.proj.weight" in state_dict:
        return _infer_flat(state_dict)
    if "patch_embed.0.proj.weight" in state_dict:
        return _infer_pyramid(state_dict)
    raise CheckpointError(
        "the checkpoint is not a GFNet: it has neither 'patch_embed.proj.weight' (flat) "
        "nor 'patch_embed.0.proj.weight' (pyramid)"
    )


def _require(state_dict: dict[str, torch.Tensor], key: str, ndim: int) -> torch.Tensor:
    if key not in state_dict:
        raise CheckpointError(f"the checkpoint is missing {key!r}")
    value = state_dict[key]
    if value.ndim != ndim:
        raise CheckpointError(f"{key} has shape {tuple(value.shape)}; expected {ndim} dimensions")
    return value


def _grid(state_dict: dict[str, torch.Tensor], filter_key: str, num_tokens: int) -> tuple[int, int]:
    weight = _require(state_dict, filter_key, 4)
    rows, half_cols = int(weight.shape[0]), int(weight.shape[1])
    if rows == 0 or num_tokens % rows:
        raise CheckpointError(
            f"pos_embed has {num_tokens} tokens, which no grid with {rows} rows "
            f"(from {filter_key}) explains"
        )
    cols = num_tokens // rows
    if cols // 2 + 1 != half_cols:
        raise CheckpointError(
            f"{filter_key} has {half_cols} frequency columns; a {rows}x{cols} grid needs "
            f"{cols // 2 + 1}"
        )
    return rows, cols


def _head(state_dict: dict[str, torch.Tensor]) -> int:
    if "head.weight" in state_dict:
        return int(_require(state_dict, "head.weight", 2).shape[0])
    return 0


def _count(state_dict: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in state_dict if (m := regex.match(key))})


def _infer_flat(sd: dict[str, torch.Tensor]) -> GFNetConfig:
    proj = _require(sd, "patch_embed.proj.weight", 4)
    pos = _require(sd, "pos_embed", 3)
    width, in_chans, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    depth = _count(sd, r"blocks\.(\d+)\.")
    if depth == 0:
        raise CheckpointError("the checkpoint has no blocks")
    rows, cols = _grid(sd, "blocks.0.filter.complex_weight", int(pos.shape[1]))
    hidden = int(_require(sd, "blocks.0.mlp.fc1.weight", 2).shape[0])
    size = [rows * patch, cols * patch]
    return GFNetConfig(
        kind="flat",
        patch_size=patch,
        embed_dim=width,
        depth=depth,
        mlp_ratio=hidden / width,
        img_size=size if rows != cols else size[0],
        in_chans=in_chans,
        num_classes=_head(sd),
    )


def _infer_pyramid(sd: dict[str, torch.Tensor]) -> GFNetConfig:
    proj = _require(sd, "patch_embed.0.proj.weight", 4)
    pos = _require(sd, "pos_embed", 3)
    in_chans, patch = int(proj.shape[1]), int(proj.shape[2])
    stages = _count(sd, r"patch_embed\.(\d+)\.proj\.weight")
    if stages != 4:
        raise CheckpointError(f"a pyramid GFNet has 4 stages; the checkpoint has {stages}")
    widths = [int(_require(sd, f"patch_embed.{i}.proj.weight", 4).shape[0]) for i in range(4)]
    depths = [_count(sd, rf"blocks\.{i}\.(\d+)\.") for i in range(4)]
    ratios = []
    for i, depth in enumerate(depths):
        if depth == 0:
            ratios.append(4.0)
            continue
        hidden = int(_require(sd, f"blocks.{i}.0.mlp.fc1.weight", 2).shape[0])
        ratios.append(hidden / widths[i])
    first = next((i for i, d in enumerate(depths) if d), None)
    if first is None:
        raise CheckpointError("the checkpoint has no blocks")
    rows, cols = (
        _grid(sd, "blocks.0.0.filter.complex_weight", int(pos.shape[1]))
        if depths[0]
        else (_square(int(pos.shape[1])))
    )
    has_gamma = any(key.endswith(".gamma") for key in sd)
    size = [rows * patch, cols * patch]
    return GFNetConfig(
        kind="pyramid",
        patch_size=patch,
        embed_dim=widths,
        depth=depths,
        mlp_ratio=ratios,
        init_values=1e-3 if has_gamma else None,
        img_size=size if rows != cols else size[0],
        in_chans=in_chans,
        num_classes=_head(sd),
    )


def _square(num_tokens: int) -> tuple[int, int]:
    side = int(round(num_tokens**0.5))
    if side * side != num_tokens:
        raise CheckpointError(f"cannot tell the token grid of pos_embed with {num_tokens} tokens")
    return side, side


def apply_arch(config: GFNetConfig, arch: str) -> GFNetConfig:
    """Take a zoo variant's training settings, after checking the shapes agree with it."""
    entry = get_zoo_entry(arch)
    reference = entry.config(img_size=config.img_size, num_classes=config.num_classes)
    disagreements = []
    if reference.kind != config.kind:
        disagreements.append(f"kind {config.kind} (not {reference.kind})")
    for name, mine, theirs in (
        ("patch size", config.patch_size, reference.patch_size),
        ("widths", config.widths, reference.widths),
        ("depths", config.depths, reference.depths),
        ("MLP ratios", config.mlp_ratios, reference.mlp_ratios),
    ):
        if reference.kind == config.kind and mine != theirs:
            disagreements.append(f"{name} {_fmt(mine)} (not {_fmt(theirs)})")
    if disagreements:
        raise CheckpointError(
            f"the checkpoint does not match --arch {entry.name}: it has " + ", ".join(disagreements)
        )
    return config.replace(
        drop_path_rate=reference.drop_path_rate,
        init_values=reference.init_values if config.init_values is not None else None,
        architecture=entry.name,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------- conversion
def convert_checkpoint(
    source: str | Path,
    output_dir: str | Path,
    *,
    arch: str | None = None,
    use_ema: bool = False,
    labels: str | None = None,
    overwrite: bool = False,
) -> ConversionResult:
    """Convert an authors' checkpoint (a file, an http(s) URL or a zoo name) to a MODEL folder.

    ``output_dir`` is checked before anything is downloaded or read, and written under its
    lock (:func:`~gfnet_cli.hub.serialization.atomic_directory`). A zoo name's download,
    check against its record and conversion hold the zoo entry's lock
    (:func:`~gfnet_cli.hub.zoo_source.first_use_lock`).
    """
    check_output_dir(output_dir, overwrite=overwrite)
    options = {"arch": arch, "use_ema": use_ema, "labels": labels, "overwrite": overwrite}
    zoo_name = _zoo_name(str(source))
    if zoo_name is None:
        return convert_source(source, output_dir, **options)
    with first_use_lock(zoo_name):
        return convert_source(source, output_dir, **options)


def convert_source(
    source: str | Path,
    output_dir: str | Path,
    *,
    arch: str | None = None,
    use_ema: bool = False,
    labels: str | None = None,
    overwrite: bool = False,
) -> ConversionResult:
    """:func:`convert_checkpoint`, for a caller that holds a zoo name's lock already."""
    source_text = str(source)
    checkpoint_path, source_label, zoo_name = _resolve_source(source_text)
    if zoo_name and arch is None:
        arch = zoo_name
    sha256 = None
    if zoo_name:  # checked before a byte of it is unpickled
        sha256 = file_sha256(checkpoint_path)
        check_against_record(zoo_name, sha256, zoo_checkpoint_url(ZOO[zoo_name]))
    checkpoint = read_checkpoint(checkpoint_path)
    sha256 = sha256 or file_sha256(checkpoint_path)
    state_dict, used_ema = extract_state_dict(checkpoint, use_ema=use_ema)
    config = infer_config(state_dict)
    if arch is not None:
        config = apply_arch(config, arch)
    else:
        matched = match_architecture(config)
        if matched:
            config = apply_arch(config, matched)
    class_names = _class_names(labels, config.num_classes)
    config = config.replace(class_names=class_names)
    model = model_from_state_dict(config, state_dict, source=source_label)
    card = model_card(
        model.config,
        source=source_label,
        source_sha256=sha256,
        used_ema=used_ema,
        num_params=model.num_params,
    )
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        save_model(model, staging, card=card)
    logger.info("converted %s -> %s (%s)", source_label, output_dir, config.describe())
    return ConversionResult(
        output_dir=Path(output_dir),
        config=config,
        num_params=model.num_params,
        source=source_label,
        used_ema=used_ema,
        sha256=sha256,
    )


def _zoo_name(source: str) -> str | None:
    """The zoo entry ``source`` names (a zoo name that is not a local file), if any."""
    if source.lower() in ZOO and not Path(source).exists():
        return ZOO[source.lower()].name
    return None


def _resolve_source(source: str) -> tuple[Path, str, str | None]:
    """A local path for SOURCE: the file itself, a downloaded URL, or a zoo entry's link."""
    if source.lower() in ZOO and not Path(source).exists():
        entry = ZOO[source.lower()]
        url = zoo_checkpoint_url(entry)
        return download_url(url), f"{entry.name} ({url})", entry.name
    if re.match(r"^https?://", source):
        return download_url(source), source, None
    return Path(source), source, None


def _class_names(labels: str | None, num_classes: int) -> list[str] | None:
    if labels is None:
        return imagenet_class_names() if num_classes == 1000 else None
    if labels in ("imagenet-1k", "imagenet1k", "imagenet"):
        names = imagenet_class_names()
    else:
        names = read_label_file(labels)
    if len(names) != num_classes:
        raise UsageError(
            f"--labels lists {len(names)} class names; the model has {num_classes} classes"
        )
    return names


# Magic numbers of files people pass by mistake, and what to call them.
_SIGNATURES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
    (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights?)"),
    (b"\x08", "a protobuf file (an ONNX model?)"),
)


def describe_content(path: Path) -> str:
    """What a file that is not a checkpoint looks like, from its first bytes: a user who passed
    the wrong file learns which one it is, not the unpickler's opcode number."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    stripped = head.lstrip()
    if stripped[:1] == b"<":
        return "it looks like an HTML or XML page (a download that returned a web page?)"
    if stripped[:1] in (b"{", b"["):
        return "it looks like JSON text (a config.json?)"
    if stripped.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file itself (run `git lfs pull`)"
    if head.startswith(b"PK"):
        return _describe_zip(path)
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return f"it looks like {name}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it holds {path.stat().st_size} bytes of unrecognized binary data"
    if text.isprintable() or all(c.isprintable() or c.isspace() for c in text):
        preview = " ".join(text.split())[:40]
        return f"it is a text file (starting {preview!r})"
    return f"it holds {path.stat().st_size} bytes of unrecognized binary data"


def _describe_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "it is a truncated or damaged zip archive (a download cut short?)"
    if any(name.endswith("data.pkl") for name in names):
        return "it is a PyTorch checkpoint whose contents are damaged"
    return "it is a zip archive without PyTorch's data.pkl"


__all__ = [
    "ConversionResult",
    "convert_checkpoint",
    "extract_state_dict",
    "infer_config",
    "read_checkpoint",
    "zoo_checkpoint_url",
    "ZOO_MIRROR_ENV",
]
