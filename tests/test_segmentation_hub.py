"""A segmentation MODEL's card and its push, and segmentation DATASETs, through the real
huggingface_hub and datasets clients against the loopback Hub (tests/hub_server.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from gfnet_cli import create_model
from gfnet_cli.hub.card import model_card
from gfnet_cli.hub.resolve import load_model
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models.segmentation import GFNetForSegmentation
from tests.hub_server import FakeHub
from tests.test_hub import hub, writer  # noqa: F401  (fixtures)
from tests.test_segmentation_evaluate import TINY, scene, tiny_segmenter


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


# ------------------------------------------------------------------------- Hub datasets
def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def scene_rows(seeds: list[int] | range, mask_column: str = "annotation") -> Any:
    """Scenes as scene_parse_150 stores them: an image column and a mask column (PNG bytes)."""
    import datasets

    images, masks = [], []
    for seed in seeds:
        image, mask = scene(seed)
        images.append({"bytes": _png(np.asarray(image)), "path": f"{seed}.png"})
        masks.append({"bytes": _png(mask), "path": f"{seed}_mask.png"})
    features = datasets.Features({"image": datasets.Image(), mask_column: datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, mask_column: masks}, features=features)


def _parquet(seeds: list[int], mask_column: str = "annotation") -> bytes:
    buffer = io.BytesIO()
    scene_rows(seeds, mask_column).to_parquet(buffer)
    return buffer.getvalue()


def _gfnet(hub: FakeHub, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:  # noqa: F811
    """The CLI in a fresh process: datasets and huggingface_hub read HF_ENDPOINT at import."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = os.environ | {"HF_ENDPOINT": hub.url, "HF_DATASETS_CACHE": str(tmp_path / "cache"),
                        "PYTHONPATH": path, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "gfnet_cli", *args], env=env, text=True,
                          capture_output=True, timeout=600)  # fmt: skip


@pytest.fixture
def hub_scenes(hub):  # noqa: F811
    """``org/scenes`` on the loopback Hub: parquet train/validation splits and id2label.json."""
    hub.add_repo("org/scenes", {
        "README.md": b"---\nlicense: mit\n---\n",
        "data/train-00000-of-00001.parquet": _parquet([0, 1, 2, 3]),
        "data/validation-00000-of-00001.parquet": _parquet([100, 101]),
        "id2label.json": json.dumps({"0": "sky", "1": "road", "2": "tree"}).encode(),
    })  # fmt: skip
    return "org/scenes"


def test_evaluate_a_hub_parquet_dataset_plain_and_streamed(hub, hub_scenes, tmp_path):  # noqa: F811
    save_model(tiny_segmenter(), tmp_path / "m")
    args = ("evaluate", "--model", str(tmp_path / "m"), "--dataset", hub_scenes,
            "--num-workers", "0", "--json")  # fmt: skip
    plain = _gfnet(hub, tmp_path, *args)
    assert plain.returncode == 0, plain.stderr
    streamed = _gfnet(hub, tmp_path, *args, "--streaming")
    assert streamed.returncode == 0, streamed.stderr
    plain_json, streamed_json = json.loads(plain.stdout), json.loads(streamed.stdout)
    assert plain_json["num_samples"] == streamed_json["num_samples"] == 2
    assert plain_json["mean_iou"] == pytest.approx(streamed_json["mean_iou"])
    assert plain_json["split"] == "validation"


def test_finetune_from_a_hub_dataset_takes_its_class_names(hub, hub_scenes, tmp_path):  # noqa: F811
    from tests.test_segmentation_finetune import BACKBONE

    save_model(create_model(BACKBONE), tmp_path / "backbone")
    done = _gfnet(hub, tmp_path, "finetune", "--task", "segmentation", "--model",
                  str(tmp_path / "backbone"), "--dataset", hub_scenes, "--output-dir",
                  str(tmp_path / "run"), "--img-size", "32", "--epochs", "1", "--batch-size",
                  "2", "--num-workers", "0", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "mean_iou" in result["best_metrics"] and result["num_eval_samples"] == 2
    trained = load_model(tmp_path / "run")
    assert trained.config.class_names == ["sky", "road", "tree"]  # the repo's id2label.json
    card = ModelCard.load(tmp_path / "run" / "README.md")
    [entry] = [e for e in card.data.eval_results if e.metric_type == "mean_iou"]
    assert entry.dataset_type == "org/scenes"


def test_a_hub_classification_dataset_is_refused_for_a_segmentation_model(hub, tmp_path):  # noqa: F811
    import datasets

    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["a", "b"])})  # fmt: skip
    rows = {"image": [{"bytes": _png(np.zeros((8, 8, 3), np.uint8)), "path": "x.png"}],
            "label": [1]}  # fmt: skip
    buffer = io.BytesIO()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(buffer)
    hub.add_repo("org/labels", {"data/validation-00000-of-00001.parquet": buffer.getvalue()})
    save_model(tiny_segmenter(), tmp_path / "m")
    result = _gfnet(hub, tmp_path, "evaluate", "--model", str(tmp_path / "m"), "--dataset",
                    "org/labels")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "image (Image), label (ClassLabel, 2 classes)" in " ".join(result.stderr.split())



@pytest.fixture
def brief_stream_ends(tmp_path, monkeypatch) -> None:
    """``datasets`` sleeps 5 s when a shuffled parquet stream ends (its guard against
    apache/arrow#45214), once per epoch and worker. These runs last seconds, so their
    subprocesses (through a ``sitecustomize`` on PYTHONPATH) sleep 0.2 s instead."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import datasets.config\n\ndatasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.2\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(site), os.environ.get("PYTHONPATH")])))  # fmt: skip


def _streamed_finetune_args(backbone: Path) -> list[str]:
    return ["--task", "segmentation", "--model", str(backbone), "--dataset", "org/scenes",
            "--img-size", "32", "--batch-size", "2", "--streaming",
            "--shuffle-buffer", "3"]  # fmt: skip


def test_finetune_streams_a_hub_parquet_dataset(hub, hub_scenes, tmp_path,  # noqa: F811
                                                brief_stream_ends):  # fmt: skip
    """Rows streamed from the Hub's parquet files (nothing downloaded ahead), classes from the
    repository's id2label.json, the validation split streamed and scored."""
    save_model(tiny_segmenter(), tmp_path / "backbone")  # sky, road, tree: its head goes on
    args = ["finetune", *_streamed_finetune_args(tmp_path / "backbone"), "--num-workers", "0",
            "--output-dir", str(tmp_path / "run"), "--json"]  # fmt: skip
    unknown = _gfnet(hub, tmp_path, *args)  # the repository records no split sizes
    assert unknown.returncode == 2 and "pass --max-steps" in " ".join(unknown.stderr.split())
    assert "Traceback" not in unknown.stderr
    done = _gfnet(hub, tmp_path, *args, "--max-steps", "3", "--epochs", "2")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # 4 rows in batches of 2: the first stream ends after 2 steps, the second is cut at 3
    assert result["global_step"] == 3 and result["epochs"] == 2
    assert result["num_eval_samples"] == 2 and "mean_iou" in result["best_metrics"]
    assert load_model(tmp_path / "run").config.class_names == ["sky", "road", "tree"]


@pytest.mark.slow
def test_a_killed_hub_stream_resumes_to_the_same_weights(hub, hub_scenes, tmp_path,  # noqa: F811
                                                         brief_stream_ends,
                                                         monkeypatch):  # fmt: skip
    from tests.test_finetune import _assert_same_weights, _run_killed_and_resumed

    # the runs are subprocesses: the hub fixture's HF_ENDPOINT reaches them through the
    # environment, and so does a datasets cache of their own
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    save_model(tiny_segmenter(), tmp_path / "backbone")
    # one parquet file is one shard: the stream is read in the main process (workers: the
    # local streaming tests); 4 rows in batches of 2, killed after its first checkpoint
    common = [*_streamed_finetune_args(tmp_path / "backbone"), "--num-workers", "0",
              "--epochs", "2", "--max-steps", "4", "--checkpoint-every", "1",
              "--lr-schedule", "poly", "--drop-path", "0.1"]  # fmt: skip
    ref, cut = _run_killed_and_resumed(common, tmp_path)
    results = json.loads((cut / "train_results.json").read_text())
    assert results["resumed_from_step"] >= 1 and results["global_step"] == 4
    _assert_same_weights(ref, cut)
