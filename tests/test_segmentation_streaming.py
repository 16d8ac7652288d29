"""``finetune --task segmentation --streaming``: the classification stream's machinery on images
and masks (shuffled, sharded, exact to resume), the same bad-row handling as map-style."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gfnet_cli.commands.evaluate import evaluate
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine.train import TrainingInterruptedError, finetune
from gfnet_cli.hub.serialization import save_model
from tests.conftest import assert_one_line_error
from tests.test_finetune import _assert_same_weights
from tests.test_finetune_streaming import _CtrlCAt
from tests.test_segmentation_evaluate import mask_folder, tiny_segmenter
from tests.test_segmentation_finetune import _config
from tests.test_segmentation_hub import scene_rows


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A segmentation MODEL with an 8-channel FPN: its backbone under a new head of that
    width trains in milliseconds a step (``num_classes`` 3 names other classes)."""
    folder = tmp_path_factory.mktemp("backbone") / "m"
    save_model(tiny_segmenter(), folder)
    return folder


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """8 training scenes (images/ + annotations/, matched by stem) and 2 validation ones."""
    root = tmp_path_factory.mktemp("scenes") / "d"
    mask_folder(root, splits=("training",), count=8)
    return mask_folder(root, splits=("validation",), count=2)


def _saved_scenes(folder: Path) -> Path:
    """4 training and 2 validation scenes as a ``save_to_disk`` folder (PNG bytes)."""
    import datasets

    splits = {"train": scene_rows(range(4)), "validation": scene_rows(range(100, 102))}
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize("kind", ["mask folder", "save_to_disk"])
def test_streaming_trains_and_scores_the_validation_split(scenes, backbone, tmp_path, kind):
    dataset = scenes if kind == "mask folder" else _saved_scenes(tmp_path / "saved")
    rows, epochs = (8, 2) if kind == "mask folder" else (4, 1)
    (tmp_path / "names.txt").write_text("sky\nroad\ntree\n")  # class names as without streaming
    out = tmp_path / "run"
    result = finetune(_config(dataset, backbone, out, streaming=True, shuffle_buffer=4,
                              epochs=epochs, labels=str(tmp_path / "names.txt")))  # fmt: skip
    # one process, no workers: every row once an epoch, in batches of 2
    assert result.global_step == epochs * rows // 2 and result.epochs == epochs
    assert result.num_train_samples == rows and result.num_eval_samples == 2
    assert result.validation_split.endswith("[validation]")
    saved = json.loads((out / "train_results.json").read_text())
    assert saved["hyperparameters"]["streaming"] is True
    assert json.loads((out / "config.json").read_text())["class_names"] == ["sky", "road", "tree"]
    # the streamed validation scored as evaluate scores the kept MODEL
    scored = evaluate(str(out), str(dataset), split="validation", num_workers=0)
    assert scored.mean_iou == pytest.approx(result.best_metrics["mean_iou"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_interrupted_then_resumed_gives_the_same_weights(scenes, backbone, tmp_path,
                                                                   workers):  # fmt: skip
    """Stopped inside the second epoch (with 2 workers: worker 1 next in the round-robin), the
    resumed stream skips exactly the rows handed over, and each later sample's crop, flip and
    colours are seeded as in the uninterrupted run."""

    def config(out: Path, **changes):
        return _config(scenes, backbone, out, streaming=True, num_workers=workers,
                       shuffle_buffer=3, drop_path=0.1, lr_schedule="poly",
                       warmup_epochs=0.0, min_lr=0.0, **changes)  # fmt: skip

    reference = finetune(config(tmp_path / "ref"))
    assert reference.global_step == 8
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterruptedError):
        finetune(config(cut), _CtrlCAt(6))
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(cut / "checkpoints")[-1])
    assert (state["epoch"], state["step_in_epoch"]) == (1, 3)
    assert state["stream"][0]["next_worker"] == (1 if workers == 2 else 0)
    resumed = finetune(config(cut, resume=True))
    assert resumed.resumed_from_step == 7 and resumed.global_step == 8
    _assert_same_weights(tmp_path / "ref", cut)


def _bad_rows(root: Path) -> Path:
    """A mask folder whose training split has one corrupt mask and one of the wrong size."""
    mask_folder(root, count=4)
    masks = root / "annotations" / "training"
    (masks / "scene_1.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(masks / "scene_2.png")
    return root


def test_bad_rows_are_skipped_and_counted_as_without_streaming(backbone, tmp_path):
    # one batch of the 4 rows: the 2 readable ones train (BatchNorm needs 2 at 32 pixels)
    dataset = _bad_rows(tmp_path / "bad")
    counts = {}
    for streaming in (False, True):
        result = finetune(_config(dataset, backbone, tmp_path / f"run-{streaming}",
                                  streaming=streaming, epochs=1, batch_size=4))  # fmt: skip
        counts[streaming] = result.unreadable_train_images
    assert counts == {False: 2, True: 2}


def test_a_mask_value_that_is_no_class_stops_the_stream_naming_it(backbone, tmp_path, run_cli):
    root = mask_folder(tmp_path / "d", splits=("training",), count=2)
    mask = np.zeros((40, 48), np.uint8)
    mask[:] = 7  # in every crop
    Image.fromarray(mask, mode="L").save(root / "annotations" / "training" / "scene_0.png")
    out = tmp_path / "out"
    result = run_cli("finetune", "--task", "segmentation", "--model", str(backbone), "--dataset",
                     str(root), "--num-classes", "3", "--img-size", "32", "--num-workers", "0",
                     "--batch-size", "2", "--output-dir", str(out), "--streaming")  # fmt: skip
    assert_one_line_error(result, 2, "mask value 7")
    assert not (out / "model.safetensors").exists()


def test_nothing_is_held_out_of_a_stream(backbone, tmp_path, caplog):
    """Without a validation split a map-style run holds out a share of train; a stream cannot
    be held out from, so every row trains and the last epoch is kept."""
    dataset = mask_folder(tmp_path / "d", splits=("training",), count=4)
    result = finetune(_config(dataset, backbone, tmp_path / "run", streaming=True, epochs=1,
                              validation_split_percentage=50))  # fmt: skip
    assert result.num_train_samples == 4 and result.global_step == 2
    assert result.validation_split is None and result.num_eval_samples == 0
    assert "a stream cannot be held out from" in caplog.text
