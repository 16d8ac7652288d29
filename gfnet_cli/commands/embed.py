"""Embeddings: one vector per image, for retrieval, clustering and linear probes.

The vector is the model's pooled pre-logits (``forward_head(forward_features(x),
pre_logits=True)``): the final norm's output averaged over the token grid, what the classifier
reads (for a segmentation MODEL, which has no classifier, its backbone's: the last stage's
features after its norm, averaged). Inputs are those of ``predict`` (files, folders, glob
patterns, PIL images) with the same per-file error entries; an unreadable input is reported
and the rest are embedded.

Files: ``.safetensors`` holds ``embeddings`` (N x D float32, input order) with the image
paths as a JSON list under the metadata key ``images``; ``.parquet`` holds one row per image
(``image``, ``embedding``). Written atomically; an existing file is replaced only with
``overwrite``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gfnet_cli.commands.predict import ImageInput, expand_images, image_batches
from gfnet_cli.data.transforms import eval_transform
from gfnet_cli.device import check_precision, inference, resolve_device
from gfnet_cli.engine.inference import (
    ProgressCallback,
    check_at_least,
    model_name,
    prepare_model,
)
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.serialization import check_output_file, publish_file, save_weights
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.models.segmentation import GFNetForSegmentation

logger = logging.getLogger(__name__)

FORMATS = {".safetensors": "safetensors", ".parquet": "parquet"}
EMBEDDINGS_KEY = "embeddings"
IMAGES_KEY = "images"


@dataclass
class EmbeddingResult:
    """Embeddings of the readable inputs (row ``i`` is ``images[i]``), and the failures.

    ``errors`` are ``predict``'s error entries, ``{"image", "error"}``. ``output`` is the file
    written (``None`` when none was asked for, or no input could be read).
    """

    model: str
    images: list[str]
    embeddings: torch.Tensor
    errors: list[dict[str, str]] = field(default_factory=list)
    output: Path | None = None
    format: str | None = None

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def num_images(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict[str, Any]:
        """The ``embed --json`` document (docs/cli.md); the vectors stay in the file."""
        return {
            "output": str(self.output) if self.output is not None else None,
            "format": self.format,
            "model": self.model,
            "num_images": self.num_images,
            "dim": self.dim,
            "errors": list(self.errors),
        }


def embed(
    images: ImageInput | Iterable[ImageInput],
    model: str | Path | GFNetArchitecture | GFNetForSegmentation,
    *,
    output: str | Path | None = None,
    batch_size: int = 32,
    img_size: int | tuple[int, int] | None = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> EmbeddingResult:
    """Pooled pre-logits embeddings of ``images`` under ``model``, in input order.

    ``images``: paths, folders (searched recursively), glob patterns or PIL images, as for
    :func:`gfnet_cli.predict`. ``output``: a ``.safetensors`` or ``.parquet`` file to write
    (none: only returned); an existing file needs ``overwrite``. ``progress(done, total)``
    is called after each batch.
    """
    check_at_least("batch_size", batch_size, 1)
    target = check_output_file(
        output, overwrite=overwrite, suffixes=tuple(FORMATS), parent_must_exist=False
    )
    inputs = expand_images(images)
    if not inputs:
        raise UsageError("no images given", param="images")
    torch_device = resolve_device(device)
    precision = check_precision(torch_device, precision)
    net = prepare_model(model, img_size, torch_device)
    if isinstance(net, GFNetForSegmentation):  # no classifier: its backbone's pooled features
        net = net.backbone
    transform = eval_transform(net.config, img_size)

    rows: list[torch.Tensor] = []
    names: list[str] = []
    errors: list[dict[str, str]] = []
    for batch in image_batches(inputs, batch_size, transform):
        if batch.images is not None:
            rows.append(_embed_batch(net, batch.images.to(torch_device), precision))
            names.extend(entry.image for entry in batch.ready)
        errors.extend(entry.to_dict() for entry in batch.entries if not entry.ok)
        if progress is not None:
            progress(batch.end, len(inputs))

    embeddings = torch.cat(rows) if rows else torch.zeros(0, net.num_features)
    result = EmbeddingResult(model_name(model), names, embeddings, errors)
    if target is not None and names:
        result.format = write_embeddings(target, embeddings, names, model=result.model)
        result.output = target
    elif target is not None:
        logger.warning("no input could be read: %s not written", target)
    return result


def _embed_batch(net: GFNetArchitecture, batch: torch.Tensor, precision: str) -> torch.Tensor:
    with inference(batch.device, precision):
        vectors = net.forward_head(net.forward_features(batch), pre_logits=True)
    if vectors.dim() == 4:  # a model built with global_pool="": pool here
        vectors = vectors.mean(dim=(2, 3))
    return vectors.float().cpu()


def write_embeddings(
    path: str | Path, embeddings: torch.Tensor, images: Sequence[str], *, model: str = ""
) -> str:
    """Write ``embeddings`` (N x D) and their image names to ``path`` atomically.

    The format follows the suffix: safetensors (``embeddings`` + metadata ``images``,
    ``model``) or parquet (columns ``image``, ``embedding``). Returns the format's name.
    """
    path = Path(path)
    if len(images) != embeddings.shape[0]:
        raise ValueError(f"{len(images)} image names for {embeddings.shape[0]} embeddings")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"output {path} must end in .safetensors or .parquet", param="output")
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = embeddings.detach().to("cpu", torch.float32).contiguous()
    if kind == "safetensors":
        metadata = {IMAGES_KEY: json.dumps(list(images)), "model": model}
        save_weights({EMBEDDINGS_KEY: vectors}, path, metadata=metadata)
    else:
        _write_parquet(path, vectors, images, model)
    return kind


def _write_parquet(path: Path, vectors: torch.Tensor, images: Sequence[str], model: str) -> None:
    # pyarrow is installed with datasets, a dependency of the package.
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = int(vectors.shape[1])
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.numpy().reshape(-1)), dim)
    table = pa.table({"image": pa.array(list(images), pa.string()), "embedding": column})
    table = table.replace_schema_metadata({"model": model, "dim": str(dim)})
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as handle:
        tmp = Path(handle.name)
    try:
        pq.write_table(table, tmp)
        publish_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_embeddings(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """``(embeddings, images)`` from a file :func:`embed` wrote (either format)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        images = table.column("image").to_pylist()
        flat = table.column("embedding").combine_chunks().flatten().to_numpy()
        return torch.from_numpy(flat.reshape(len(images), -1).copy()), images
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        return handle.get_tensor(EMBEDDINGS_KEY), json.loads(metadata.get(IMAGES_KEY, "[]"))

