"""The authors' seven ImageNet-1k models, declared as data.

Architectures and published figures come from the authors' code and README; parameter
counts and GFLOPs are always computed from the built model, never copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gfnet_cli.errors import ModelNotFoundError
from gfnet_cli.labels import imagenet_class_names
from gfnet_cli.models.config import GFNetConfig


@dataclass(frozen=True)
class ZooEntry:
    """One variant: its architecture, the authors' published accuracy and weights link."""

    name: str
    architecture: dict[str, Any]
    top1: float
    top5: float
    url: str
    img_size: int = 224
    #: the commit of the project's own Hub repository for this variant, once published
    #: (docs/trust.md); ``None``: zoo names resolve to the authors' checkpoint
    hub_revision: str | None = None

    @property
    def kind(self) -> str:
        return self.architecture["kind"]

    def config(self, **overrides: Any) -> GFNetConfig:
        """The variant's config for ImageNet-1k at 224 px; ``overrides`` change any field."""
        values: dict[str, Any] = dict(self.architecture)
        values.update(
            img_size=self.img_size,
            num_classes=1000,
            class_names=imagenet_class_names(),
            architecture=self.name,
        )
        values.update(overrides)
        if values.get("num_classes") != 1000 and "class_names" not in overrides:
            values["class_names"] = None
        return GFNetConfig(**values)


def _flat(*, embed_dim: int, depth: int, drop_path_rate: float = 0.0) -> dict[str, Any]:
    return {
        "kind": "flat",
        "patch_size": 16,
        "embed_dim": embed_dim,
        "depth": depth,
        "mlp_ratio": 4.0,
        "drop_path_rate": drop_path_rate,
        "init_values": None,
    }


def _pyramid(
    *, embed_dim: list[int], depth: list[int], drop_path_rate: float, init_values: float
) -> dict[str, Any]:
    return {
        "kind": "pyramid",
        "patch_size": 4,
        "embed_dim": embed_dim,
        "depth": depth,
        "mlp_ratio": [4.0, 4.0, 4.0, 4.0],
        "drop_path_rate": drop_path_rate,
        "init_values": init_values,
    }


def _authors_link(file_id: str) -> str:
    return f"https://cloud.tsinghua.edu.cn/f/{file_id}/?dl=1"


_ENTRIES = [
    ZooEntry(
        name="gfnet-ti",
        architecture=_flat(embed_dim=256, depth=12),
        top1=74.6,
        top5=92.2,
        url=_authors_link("3d0c1579aa524a0a99dd"),
    ),
    ZooEntry(
        name="gfnet-xs",
        architecture=_flat(embed_dim=384, depth=12),
        top1=78.6,
        top5=94.2,
        url=_authors_link("e0ab5b1583954a1fa9b2"),
    ),
    ZooEntry(
        name="gfnet-s",
        architecture=_flat(embed_dim=384, depth=19, drop_path_rate=0.15),
        top1=80.0,
        top5=94.9,
        url=_authors_link("e5561fa070c44d9399bf"),
    ),
    ZooEntry(
        name="gfnet-b",
        architecture=_flat(embed_dim=512, depth=19, drop_path_rate=0.25),
        top1=80.7,
        top5=95.1,
        url=_authors_link("2fbf264597af4d72afb3"),
    ),
    ZooEntry(
        name="gfnet-h-ti",
        architecture=_pyramid(
            embed_dim=[64, 128, 256, 512], depth=[3, 3, 10, 3], drop_path_rate=0.1, init_values=1e-3
        ),
        top1=80.1,
        top5=95.1,
        url=_authors_link("b22dd45eccbe462cbbfb"),
    ),
    ZooEntry(
        name="gfnet-h-s",
        architecture=_pyramid(
            embed_dim=[96, 192, 384, 768], depth=[3, 3, 10, 3], drop_path_rate=0.2, init_values=1e-5
        ),
        top1=81.5,
        top5=95.6,
        url=_authors_link("5229cb4d1daf48e69675"),
    ),
    ZooEntry(
        name="gfnet-h-b",
        architecture=_pyramid(
            embed_dim=[96, 192, 384, 768], depth=[3, 3, 27, 3], drop_path_rate=0.4, init_values=1e-6
        ),
        top1=82.9,
        top5=96.2,
        url=_authors_link("954c5af21e824ba6b40c"),
    ),
]
ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}


def list_models() -> list[str]:
    """Names of the model-zoo variants."""
    return list(ZOO)


def get_zoo_entry(name: str) -> ZooEntry:
    key = name.strip().lower()
    if key not in ZOO:
        raise ModelNotFoundError(
            f"unknown model {name!r}: choose one of {', '.join(ZOO)} (see `gfnet models`)"
        )
    return ZOO[key]


def is_zoo_name(name: str) -> bool:
    return name.strip().lower() in ZOO


def match_architecture(config: GFNetConfig) -> str | None:
    """The zoo variant whose architecture ``config`` has, if any (image size aside)."""
    for entry in ZOO.values():
        reference = GFNetConfig(**entry.architecture, img_size=entry.img_size)
        same = (
            reference.kind == config.kind
            and reference.patch_size == config.patch_size
            and reference.widths == config.widths
            and reference.depths == config.depths
            and reference.mlp_ratios == config.mlp_ratios
            and (reference.init_values is None) == (config.init_values is None)
        )
        if same:
            return entry.name
    return None
