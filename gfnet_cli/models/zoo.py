"""The authors' seven ImageNet-1k models, declared as data.

Architectures and published figures come from the authors' code and README; parameter
counts and GFLOPs are always computed from the built model, never copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gfnet_cli.errors import ModelNotFoundError
from gfnet_cli.models.config import GFNetConfig


@dataclass(frozen=True)
class ZooEntry:
    name: str
    architecture: dict[str, Any]
    top1: float
    top5: float
    published_gflops: float
    published_params_m: float
    url: str
    img_size: int = 224
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.architecture["kind"]

    def config(self, **overrides: Any) -> GFNetConfig:
        """The variant's config for ImageNet-1k at 224 px; ``overrides`` change any field."""
        from gfnet_cli.labels import imagenet_class_names

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


def _flat(embed_dim: int, depth: int, drop_path_rate: float = 0.0) -> dict[str, Any]:
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
    embed_dim: list[int], depth: list[int], drop_path_rate: float, init_values: float
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


_LINK = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"

ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        ZooEntry(
            "gfnet-ti", _flat(256, 12), 74.6, 92.2, 1.3, 7, _LINK.format("3d0c1579aa524a0a99dd")
        ),
        ZooEntry(
            "gfnet-xs", _flat(384, 12), 78.6, 94.2, 2.8, 16, _LINK.format("e0ab5b1583954a1fa9b2")
        ),
        ZooEntry(
            "gfnet-s",
            _flat(384, 19, 0.15),
            80.0,
            94.9,
            4.5,
            25,
            _LINK.format("e5561fa070c44d9399bf"),
        ),
        ZooEntry(
            "gfnet-b",
            _flat(512, 19, 0.25),
            80.7,
            95.1,
            7.9,
            43,
            _LINK.format("2fbf264597af4d72afb3"),
        ),
        ZooEntry(
            "gfnet-h-ti",
            _pyramid([64, 128, 256, 512], [3, 3, 10, 3], 0.1, 1e-3),
            80.1,
            95.1,
            2.0,
            15,
            _LINK.format("b22dd45eccbe462cbbfb"),
        ),
        ZooEntry(
            "gfnet-h-s",
            _pyramid([96, 192, 384, 768], [3, 3, 10, 3], 0.2, 1e-5),
            81.5,
            95.6,
            4.5,
            32,
            _LINK.format("5229cb4d1daf48e69675"),
        ),
        ZooEntry(
            "gfnet-h-b",
            _pyramid([96, 192, 384, 768], [3, 3, 27, 3], 0.4, 1e-6),
            82.9,
            96.2,
            8.4,
            54,
            _LINK.format("954c5af21e824ba6b40c"),
        ),
    ]
}


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
        arch = entry.architecture
        same = (
            arch["kind"] == config.kind
            and arch["patch_size"] == config.patch_size
            and config.widths == GFNetConfig(**arch, img_size=entry.img_size).widths
            and config.depths == GFNetConfig(**arch, img_size=entry.img_size).depths
            and config.mlp_ratios == GFNetConfig(**arch, img_size=entry.img_size).mlp_ratios
            and (arch["init_values"] is None) == (config.init_values is None)
        )
        if same:
            return entry.name
    return None
