"""DATASET arguments: Hub datasets, local image folders and ``save_to_disk`` folders.

All three become a ``datasets`` split plus the names of its image and label columns, found
from the features (an ``Image`` feature, a ``ClassLabel`` feature) unless given. Images are
decoded by :func:`gfnet_cli.data.images.open_image` in DataLoader workers, so a corrupt file
is counted and skipped instead of ending a long run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gfnet_cli.data.images import ImageReadError, is_image_file, open_image
from gfnet_cli.errors import GFNetError, UsageError, first_line, is_transport_error

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("validation", "valid", "val", "test")
TRAIN_SPLITS = ("train", "training")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class DatasetError(UsageError):
    """A DATASET that cannot be used as given; the message says how to fix it."""


@dataclass
class ImageDataset:
    """One split of an image-classification dataset and where its columns are."""

    dataset: Any  # datasets.Dataset or datasets.IterableDataset
    name: str
    split: str
    image_column: str
    label_column: str | None
    class_names: list[str] | None
    streaming: bool = False

    def __post_init__(self) -> None:
        # Labels stored as text (no ClassLabel feature): the sorted distinct values are the
        # classes, as an image folder's sub-folders would be.
        if self.class_names is None and self.label_ids_from_text:
            if self.streaming:
                raise DatasetError(
                    f"{self.name} ({self.split}): the label column {self.label_column!r} holds "
                    "text, whose classes cannot be listed without reading the whole stream; "
                    "read it without streaming",
                    param="streaming",
                )
            values = self.dataset.unique(self.label_column)
            self.class_names = sorted({str(v) for v in values if v is not None})

    @property
    def label_ids_from_text(self) -> bool:
        """Whether the label column holds class names (strings) instead of class ids."""
        import datasets

        features = getattr(self.dataset, "features", None)
        if self.label_column is None or not features or self.label_column not in features:
            return False
        feature = features[self.label_column]
        return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")

    @property
    def label_ids(self) -> dict[str, int] | None:
        """Class id of each text label (``None`` when the labels are ids already)."""
        if not self.label_ids_from_text or self.class_names is None:
            return None
        return {name: index for index, name in enumerate(self.class_names)}

    def __len__(self) -> int:
        if self.streaming:
            raise TypeError("a streaming dataset has no length")
        return len(self.dataset)


def load_splits(
    dataset: str,
    *,
    dataset_config: str | None = None,
    streaming: bool = False,
    num_shards: int | None = None,
) -> Any:
    """Every split of DATASET as a ``DatasetDict`` (or ``IterableDatasetDict`` when streaming).

    ``num_shards``: how many shards a streamed ``save_to_disk`` folder is cut into (at most one
    per row), so that several DataLoader workers can share it; default one.
    """
    import datasets

    path = Path(dataset).expanduser()
    try:
        if path.is_dir():
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                _refuse_empty_saved_splits(path)
                with quiet_datasets():
                    loaded = datasets.load_from_disk(str(path))
                if isinstance(loaded, datasets.Dataset):
                    split = str(loaded.split) if loaded.split is not None else "train"
                    loaded = datasets.DatasetDict({split: loaded})
                if streaming:
                    loaded = datasets.IterableDatasetDict(
                        {k: _to_iterable(v, k, num_shards) for k, v in loaded.items()}
                    )
                return loaded
            if not any(is_image_file(p) for p in path.rglob("*") if p.is_file()):
                raise DatasetError(
                    f"{path} holds no images: an image folder needs class sub-folders of "
                    "images (optionally under train/, validation/, test/)"
                )
            with quiet_datasets():
                return datasets.load_dataset(
                    "imagefolder", data_dir=str(path), streaming=streaming
                )
        if path.exists():
            raise DatasetError(f"{path} is a file; DATASET must be a folder or a Hub dataset id")
        if dataset.startswith((".", "/", "~")) or not _HUB_ID.match(dataset):
            raise DatasetError(f"{dataset}: no such folder (and not a Hub dataset id)")
        check_hub_reachable(dataset)
        return datasets.load_dataset(dataset, dataset_config, streaming=streaming)
    except GFNetError:
        raise
    except Exception as exc:  # datasets raises many types; each means "cannot use this"
        raise DatasetError(f"cannot load dataset {dataset!r}: {first_line(exc)}") from None


def check_hub_reachable(dataset: str) -> None:
    """Fail at once, in one line, when the Hub cannot be reached to load ``dataset`` (an id).

    ``datasets`` retries a request that gets no answer five times with back-off (about 25 s of
    "Retrying in 8s" lines) before giving up; one request without retries tells the same. Any
    answer, even a refusal, is left to ``datasets``; offline mode (``HF_HUB_OFFLINE`` or
    ``HF_DATASETS_OFFLINE``) sends nothing: ``datasets`` then reads its cache.
    """
    import datasets
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if datasets.config.HF_HUB_OFFLINE:
        return
    endpoint = constants.ENDPOINT.rstrip("/")
    try:
        get_session().head(f"{endpoint}/api/datasets/{dataset}", timeout=10)
    except Exception as exc:  # an answer of any kind is not this check's business
        if is_transport_error(exc):
            raise DatasetError(
                f"cannot reach the Hub at {endpoint} to load dataset {dataset!r}: check your "
                "connection, proxy or HF_ENDPOINT (one loaded before: set HF_HUB_OFFLINE=1)"
            ) from None


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """No ``datasets`` progress bars ("Generating train split", "Loading dataset from disk")
    while a local folder is read: they are seconds long, and our commands draw their own."""
    from datasets.utils.tqdm import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def image_folder_classes(dataset: str, split: str) -> list[str] | None:
    """The class sub-folders of a local image folder's ``split`` (None: not an image folder).

    ``datasets`` drops the label column of an image folder whose images all sit in one
    folder, so "no label column" there really means "one class".
    """
    root = Path(dataset).expanduser()
    if not root.is_dir() or (root / "dataset_dict.json").is_file():
        return None
    base = root / split if (root / split).is_dir() else root
    return sorted(
        child.name for child in base.iterdir()
        if child.is_dir() and any(is_image_file(p) for p in child.rglob("*"))
    )  # fmt: skip


def _to_iterable(data: Any, split: str, num_shards: int | None) -> Any:
    """A map-style split as a stream that still knows its size (``info.splits``)."""
    import datasets

    shards = max(1, min(num_shards or 1, len(data)))
    stream = data.to_iterable_dataset(num_shards=shards)
    stream.info.splits = datasets.SplitDict(
        {split: datasets.SplitInfo(name=split, num_examples=len(data))}
    )
    return stream


def _refuse_empty_saved_splits(path: Path) -> None:
    """``datasets`` cannot reload a saved split with no rows (it fails deep inside pyarrow)."""
    import json

    for state in sorted(path.glob("state.json")) + sorted(path.glob("*/state.json")):
        try:
            files = json.loads(state.read_text()).get("_data_files")
        except (OSError, ValueError, AttributeError):
            continue
        if files == []:
            split = state.parent.name if state.parent != path else "its only split"
            raise DatasetError(f"{path}: {split} is empty (the saved dataset holds no rows)")


def choose_split(available: Sequence[str], split: str | None, preferred: Sequence[str]) -> str:
    """The requested split, else the first preferred one present."""
    names = list(available)
    if split is not None:
        if split not in names:
            raise DatasetError(
                f"split {split!r} not found; available: {', '.join(names)}", param="split"
            )
        return split
    for name in preferred:
        if name in names:
            return name
    if len(names) == 1:
        return names[0]
    raise DatasetError(
        f"no {'/'.join(preferred)} among the splits ({', '.join(names)}); choose one with split",
        param="split",
    )


def find_columns(
    features: Any, image_column: str | None = None, label_column: str | None = None
) -> tuple[str, str | None, list[str] | None]:
    """The image column, the label column and the class names, from the features."""
    import datasets

    if features is None:
        raise DatasetError(
            "the dataset does not declare its features; pass image_column", param="image_column"
        )
    columns = list(features)
    if image_column is None:
        image_column = next(
            (c for c in columns if isinstance(features[c], datasets.Image)), None
        ) or next((c for c in ("image", "img", "pixel_values") if c in columns), None)
        if image_column is None:
            raise DatasetError(
                f"no image column found among {', '.join(columns)}; pass image_column",
                param="image_column",
            )
    elif image_column not in columns:
        raise DatasetError(
            f"image_column {image_column!r} not in {', '.join(columns)}", param="image_column"
        )
    if label_column is None:
        label_column = next(
            (c for c in columns if isinstance(features[c], datasets.ClassLabel)), None
        ) or next((c for c in ("label", "labels", "fine_label") if c in columns), None)
    elif label_column not in columns:
        raise DatasetError(
            f"label_column {label_column!r} not in {', '.join(columns)}", param="label_column"
        )
    class_names = None
    if label_column is not None and isinstance(features[label_column], datasets.ClassLabel):
        class_names = list(features[label_column].names)
    return image_column, label_column, class_names


def load_image_dataset(
    dataset: str,
    split: str | None = None,
    *,
    dataset_config: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    streaming: bool = False,
    preferred_splits: Sequence[str] = EVAL_SPLITS,
) -> ImageDataset:
    """One split of DATASET with its columns located (evaluation splits preferred by default)."""
    refuse_mask_folder(dataset)
    splits = load_splits(dataset, dataset_config=dataset_config, streaming=streaming)
    chosen = choose_split(list(splits), split, preferred_splits)
    data = splits[chosen]
    image_col, label_col, class_names = find_columns(data.features, image_column, label_column)
    return ImageDataset(
        dataset=data,
        name=dataset,
        split=chosen,
        image_column=image_col,
        label_column=label_col,
        class_names=class_names,
        streaming=streaming,
    )


def undecoded(dataset: Any, columns: Sequence[str]) -> Any:
    """``dataset`` (map-style or a stream) with its image ``columns`` left as stored bytes or
    paths: they are decoded by :func:`open_image` in the DataLoader's workers, where a corrupt
    file is counted and skipped instead of raising inside ``datasets``."""
    import datasets

    for column in columns:
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


class TorchImageDataset(torch.utils.data.Dataset):
    """A map-style view of an :class:`ImageDataset` yielding ``(tensor, label, index)``.

    Images are decoded here (in DataLoader workers) with :func:`open_image`; one that cannot
    be read yields ``None`` so :func:`collate_skipping_failures` can drop and count it.
    ``label_map`` maps the dataset's label ids to the model's class indices.
    """

    def __init__(
        self,
        data: ImageDataset,
        transform: Callable,
        label_map: dict[int, int] | None = None,
    ) -> None:
        self.image_column = data.image_column
        self.label_column = data.label_column
        self.dataset = undecoded(data.dataset, [data.image_column])
        self.transform = transform
        self.label_map = label_map
        self.label_ids = data.label_ids

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | tuple[None, str, int]:
        return _sample(self, self.dataset[int(index)], int(index))


class TorchIterableImageDataset(torch.utils.data.IterableDataset):
    """The streaming counterpart of :class:`TorchImageDataset` (same items).

    Each DataLoader worker reads its own shards of the stream (``datasets`` splits them by
    worker), so use at most ``num_shards`` workers. ``index`` counts samples per worker.
    """

    def __init__(
        self,
        data: ImageDataset,
        transform: Callable,
        label_map: dict[int, int] | None = None,
        max_samples: int | None = None,
    ) -> None:
        self.image_column = data.image_column
        self.label_column = data.label_column
        stream = undecoded(data.dataset, [data.image_column])
        self.dataset = stream.take(max_samples) if max_samples is not None else stream
        self.transform = transform
        self.label_map = label_map
        self.label_ids = data.label_ids

    @property
    def num_shards(self) -> int:
        return int(getattr(self.dataset, "num_shards", 1) or 1)

    def __iter__(self):
        for index, row in enumerate(self.dataset):
            yield _sample(self, row, index)


def _sample(
    view: Any, row: dict, index: int
) -> tuple[torch.Tensor, int, int] | tuple[None, str, int]:
    """Decode and transform one row; an unreadable image becomes ``(None, reason, index)``."""
    try:
        # A training transform draws its crop first and may let a JPEG decode smaller.
        reduce = getattr(view.transform, "decode_reduction", None)
        image = open_image(row[view.image_column], reduce=reduce)
        tensor = view.transform(image)
    except ImageReadError as exc:
        return None, str(exc), index
    label = -1
    if view.label_column is not None:
        label = label_index(row[view.label_column], getattr(view, "label_ids", None),
                            view.label_map)  # fmt: skip
    return tensor, label, index


def label_index(value: Any, label_ids: dict[str, int] | None = None,
                label_map: dict[int, int] | None = None) -> int:  # fmt: skip
    """The class index a label column's ``value`` becomes (-1: none): text through
    ``label_ids``, then another split's ids through ``label_map``. The loaders and the
    up-front label checks use this one rule, so they agree."""
    if value is None:
        return -1
    label = label_ids.get(str(value), -1) if label_ids is not None else int(value)
    if label_map is not None:
        label = label_map.get(label, -1)
    return label


@dataclass
class Batch:
    """A collated batch: the readable samples' tensors, the unreadable ones' (index, reason)."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    failures: list[tuple[int, str]]
    worker: int = 0  # the DataLoader worker that built it (streaming training)

    @property
    def rows(self) -> int:
        """Rows of the dataset this batch consumed, readable or not."""
        return len(self.labels) + len(self.failures)

    def pin_memory(self) -> Batch:
        """This batch with the tensors that go to the GPU in page-locked memory.

        DataLoader's ``pin_memory=True`` calls ``pin_memory()`` on a custom batch type and
        hands anything without it back unpinned, which turns every ``non_blocking`` copy to
        the GPU into an ordinary synchronous one. ``indices`` never leave the host.
        """
        return replace(
            self, images=self.images.pin_memory(), labels=self.labels.pin_memory()
        )

    def rows_to(
        self, device: torch.device, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of the rows ``keep`` selects (a host bool vector; default:
        the labelled rows, label >= 0) on ``device``.

        The whole batch is copied first (``non_blocking``: from pinned memory, the copy
        overlaps the device's work) and the rows are picked there; indexing on the host first
        would make a new, unpinned tensor and a synchronous copy. The mask is read on the host,
        so nothing waits for the device.
        """
        images = self.images.to(device, non_blocking=True)
        labels = self.labels.to(device, non_blocking=True)
        keep = self.labels >= 0 if keep is None else keep
        if bool(keep.all()):
            return images, labels
        rows = keep.nonzero().squeeze(1).to(device, non_blocking=True)
        return images.index_select(0, rows), labels.index_select(0, rows)

    def first(self, count: int) -> Batch:
        """The first ``count`` samples (failures first: they were read first)."""
        failures = self.failures[:count]
        rest = max(0, count - len(failures))
        return replace(
            self, images=self.images[:rest], labels=self.labels[:rest],
            indices=self.indices[:rest], failures=failures,
        )  # fmt: skip


def spaced_subset(data: Any, max_samples: int | None) -> Any:
    """``data`` (a map-style torch dataset), or ``max_samples`` of its samples evenly spaced
    over it: a quick evaluation still sees the whole split, not its first rows."""
    count = len(data)
    if max_samples is None or max_samples >= count:
        return data
    return torch.utils.data.Subset(data, [i * count // max_samples for i in range(max_samples)])


def collate_skipping_failures(items: list[tuple]) -> Batch:
    """Stack the readable samples of a batch (class indices, or masks of one size); record
    the unreadable ones."""
    good = [item for item in items if item[0] is not None]
    failures = [(item[2], item[1]) for item in items if item[0] is None]
    if good:
        images = torch.stack([item[0] for item in good])
    else:
        images = torch.empty(0)
    if good and isinstance(good[0][1], torch.Tensor):  # segmentation masks, (H, W) each
        labels = torch.stack([item[1] for item in good])
    else:
        labels = torch.tensor([item[1] for item in good], dtype=torch.long)
    indices = torch.tensor([item[2] for item in good], dtype=torch.long)
    return Batch(images, labels, indices, failures)


# ------------------------------------------------------------- folders of images and masks
# Folders a segmentation DATASET may use; found here so that a classification reader can
# refuse them (data/segmentation.py reads them).
MASK_FOLDERS = ("annotations", "masks")


def is_mask_folder(path: Path) -> bool:
    return bool(mask_folder_layout(path))


def refuse_mask_folder(dataset: str) -> None:
    """A folder of images and masks is not an image-classification folder (whose class
    sub-folders would be ``images`` and ``annotations``): refuse it for classification."""
    path = Path(dataset).expanduser()
    if path.is_dir() and is_mask_folder(path):
        split, (images, masks) = next(iter(mask_folder_layout(path).items()))
        raise DatasetError(
            f"{dataset} is a segmentation dataset (columns: image (Image), annotation (Image): "
            f"{images.relative_to(path)}/ and {masks.relative_to(path)}/ matched by name): a "
            "classification MODEL needs a label per image; evaluate a segmentation MODEL on it",
            param="dataset",
        )


def mask_folder_layout(path: Path) -> dict[str, tuple[Path, Path]]:
    """``{split: (image folder, mask folder)}`` of a local folder, in either layout."""
    found: dict[str, tuple[Path, Path]] = {}
    masks = next((path / m for m in MASK_FOLDERS if (path / m).is_dir()), None)
    if (path / "images").is_dir() and masks is not None:
        subfolders = sorted(p for p in (path / "images").iterdir() if p.is_dir())
        if not subfolders:
            return {"train": (path / "images", masks)}
        for folder in subfolders:
            if (masks / folder.name).is_dir():
                found[folder.name] = (folder, masks / folder.name)
        return found
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        split_masks = next((folder / m for m in MASK_FOLDERS if (folder / m).is_dir()), None)
        if (folder / "images").is_dir() and split_masks is not None:
            found[folder.name] = (folder / "images", split_masks)
    return found
