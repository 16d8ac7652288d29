"""The model-zoo table behind ``gfnet models``: computed params and GFLOPs, published accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from gfnet_cli.flops import config_gflops
from gfnet_cli.models.gfnet import GFNet
from gfnet_cli.models.zoo import ZOO


@dataclass
class ZooRow:
    name: str
    kind: str
    params: int
    gflops: float
    img_size: int
    top1: float
    top5: float

    def to_dict(self) -> dict:
        return asdict(self)


def model_table() -> list[ZooRow]:
    """One row per zoo variant; params and GFLOPs counted on the built architecture."""
    rows = []
    for entry in ZOO.values():
        config = entry.config()
        with torch.device("meta"):
            params = sum(p.numel() for p in GFNet(config).parameters())
        rows.append(
            ZooRow(
                name=entry.name,
                kind=entry.kind,
                params=params,
                gflops=round(config_gflops(config), 3),
                img_size=entry.img_size,
                top1=entry.top1,
                top5=entry.top5,
            )
        )
    return rows
