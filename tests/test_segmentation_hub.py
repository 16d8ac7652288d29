"""A segmentation MODEL's card and its push, and segmentation DATASETs, through the real
huggingface_hub and datasets clients against the loopback Hub (tests/hub_server.py)."""

from __future__ import annotations

import torch
import yaml
from huggingface_hub import ModelCard

from gfnet_cli.hub.card import model_card
from gfnet_cli.hub.resolve import load_model
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models.segmentation import GFNetForSegmentation
from tests.test_hub import hub, writer  # noqa: F401  (fixtures)
from tests.test_segmentation_evaluate import TINY, tiny_segmenter


def _metadata(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def test_card_is_an_image_segmentation_card_with_miou_on_hub_datasets_only():
    results = {"mean_iou": 0.4123, "mean_accuracy": 0.5, "overall_accuracy": 0.8,
               "split": "validation"}  # fmt: skip
    hyperparameters = {"recipe": "ade20k", "lr_schedule": "poly"}
    card = model_card(TINY, dataset="org/ade20k-parquet", base_model="org/gfnet-h-ti",
                      hyperparameters=hyperparameters, eval_results=results)  # fmt: skip
    meta = _metadata(card)
    assert meta["pipeline_tag"] == "image-segmentation"
    assert meta["datasets"] == ["org/ade20k-parquet"]
    assert meta["base_model"] == "org/gfnet-h-ti"
    [entry] = meta["model-index"]
    [result] = entry["results"]
    assert result["task"]["type"] == "image-segmentation"
    assert result["dataset"] == {"name": "org/ade20k-parquet", "type": "org/ade20k-parquet",
                                 "split": "validation"}  # fmt: skip
    assert {m["type"]: m["value"] for m in result["metrics"]}["mean_iou"] == 0.4123
    assert "| recipe | ade20k |" in card and "41.23" in card and "Semantic FPN" in card
    assert "Backbone weights from:** [org/gfnet-h-ti]" in card
    # a local dataset folder is no Hub id: no model-index, no datasets entry
    local = _metadata(model_card(TINY, dataset="/data/scenes", eval_results=results))
    assert "model-index" not in local and "datasets" not in local
    assert local["pipeline_tag"] == "image-segmentation"


def test_push_a_segmentation_model_and_load_it_back(run_cli, hub, writer, tmp_path):  # noqa: F811
    model = tiny_segmenter()
    save_model(model, tmp_path / "seg")
    result = run_cli("push", str(tmp_path / "seg"), "me/seg")
    assert result.exit_code == 0, result.stderr
    loaded = load_model("me/seg")
    assert isinstance(loaded, GFNetForSegmentation)
    image = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
    card = ModelCard(hub.files_at("me/seg")["README.md"].decode())
    assert card.data.pipeline_tag == "image-segmentation"
