"""A segmentation MODEL folder loads in transformers: ``AutoModelForSemanticSegmentation``,
``AutoImageProcessor`` and ``pipeline("image-segmentation")`` from a local folder and through
a real ``gfnet push`` to the loopback Hub, compared with ``gfnet``'s own model and with
``gfnet predict``'s masks; ``Trainer`` fine-tunes it; the card's snippets run as written."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from PIL import Image

from gfnet_cli import create_model, load_model
from gfnet_cli.data.segmentation import SegmentationEvalTransform
from gfnet_cli.hub import remote_code
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models.config import SegmentationConfig
from tests.test_segmentation_evaluate import TINY as PYRAMID
from tests.test_segmentation_evaluate import mask_folder, scene, tiny_segmenter
from tests.test_transformers import TINY as FLAT_CLASSIFIER
from tests.test_transformers import hub, push  # noqa: F401  (fixture)

transformers = pytest.importorskip("transformers")

#: a flat model's segmenter: its stride-16 map through the simple feature pyramid
FLAT = FLAT_CLASSIFIER.replace(
    task="segmentation", class_names=["sky", "road", "tree"],
    segmentation=SegmentationConfig(neck_channels=8, head_channels=8),
)  # fmt: skip
#: image sizes (height, width): non-square both ways, one the model must pad
SIZES = [(40, 48), (57, 31), (32, 32)]


def auto_model(repo: str, **kwargs):
    from transformers import AutoModelForSemanticSegmentation

    return AutoModelForSemanticSegmentation.from_pretrained(
        repo, trust_remote_code=True, **kwargs
    )


def varied_segmenter(config=PYRAMID):
    """A tiny segmenter whose class maps are not one class everywhere: a random head's
    logits are nearly flat, so the classifier is scaled up."""
    torch.manual_seed(0)
    model = create_model(config).eval()
    with torch.no_grad():
        model.decode_head.conv_seg.weight.mul_(200)
    return model


def class_map(segments: list[dict], label2id: dict[str, int]) -> np.ndarray:
    """The pipeline's one-mask-per-class answer as one class index per pixel."""
    width, height = segments[0]["mask"].size
    classes = np.full((height, width), -1, np.int64)
    for segment in segments:
        assert segment["score"] is None and segment["mask"].mode == "L"
        classes[np.asarray(segment["mask"]) == 255] = label2id[segment["label"]]
    assert (classes >= 0).all()  # the masks cover the image, once
    return classes


# ---------------------------------------------------------------------------- model
@pytest.mark.parametrize("config", [PYRAMID, FLAT], ids=["pyramid", "flat"])
def test_auto_model_from_a_folder_gives_gfnet_logits_and_its_loss(tmp_path, config):
    torch.manual_seed(0)
    ours = varied_segmenter(config)
    folder = tmp_path / "seg"
    save_model(ours, folder)
    written = json.loads((folder / "config.json").read_text())
    assert written["architectures"] == ["GFNetForSemanticSegmentation"]
    assert written["auto_map"]["AutoModelForSemanticSegmentation"] == (
        "modeling_gfnet.GFNetForSemanticSegmentation"
    )
    assert written["id2label"] == {"0": "sky", "1": "road", "2": "tree"}
    assert set(remote_code.transformers_files(config)) <= {p.name for p in folder.iterdir()}

    model = auto_model(str(folder))
    assert type(model).__name__ == "GFNetForSemanticSegmentation" and not model.training
    assert model.config.id2label == {0: "sky", 1: "road", 2: "tree"}
    pixels = torch.randn(2, 3, 40, 56)  # padded to the coarsest stride inside
    with torch.no_grad():
        output = model(pixel_values=pixels, output_hidden_states=True)
        expected = ours(pixels)
        (plain,) = model(pixel_values=pixels, return_dict=False)
    assert output.logits.shape == (2, 3, 40, 56)  # at the input's size
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain, output.logits, atol=0, rtol=0)
    assert len(output.hidden_states) == 4 and output.loss is None

    labels = torch.randint(0, 3, (2, 40, 56))
    labels[:, :5] = 255  # ignored, as in gfnet's training
    output = model(pixel_values=pixels, labels=labels)
    labelled = labels != 255
    by_hand = F.cross_entropy(output.logits.permute(0, 2, 3, 1)[labelled], labels[labelled])
    torch.testing.assert_close(output.loss, by_hand)
    output.loss.backward()  # Trainer's step
    assert model.gfnet.decode_head.conv_seg.weight.grad is not None
    with pytest.raises(Exception, match="mask value 7"):
        model(pixel_values=pixels, labels=torch.full((2, 40, 56), 7))


def test_from_config_gives_the_head_mmsegmentations_init(tmp_path):
    from transformers import AutoConfig, AutoModelForSemanticSegmentation

    save_model(create_model(FLAT), tmp_path / "flat")
    config = AutoConfig.from_pretrained(str(tmp_path / "flat"), trust_remote_code=True)
    model = AutoModelForSemanticSegmentation.from_config(config, trust_remote_code=True)
    assert not any(t.is_meta for t in model.state_dict().values())
    net = model.gfnet
    classifier = net.decode_head.conv_seg
    assert 0.003 < classifier.weight.std() < 0.03 and not classifier.bias.any()  # N(0, 0.01)
    # Xavier-uniform neck (std sqrt(2 / (fan_in + fan_out))), Kaiming fan-out head convs
    # (sqrt(2 / fan_out)): about twice PyTorch's default std for these shapes
    lateral = net.neck.lateral_convs[0].conv  # 1x1, 16 -> 8
    assert 0.2 < lateral.weight.std() < 0.4 and not lateral.bias.any()  # 0.29
    head = net.decode_head.scale_heads[0][0].conv  # 3x3, 8 -> 8
    assert 0.12 < head.weight.std() < 0.22  # 0.17
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(bool((m.running_var == 1).all() and (m.weight == 1).all()) for m in norms)


# ---------------------------------------------------------------------------- pipeline
def test_pipeline_masks_equal_gfnet_predict_through_push(run_cli, hub, tmp_path):  # noqa: F811
    from transformers import AutoImageProcessor, pipeline

    old = tmp_path / "old"  # a segmentation folder written before transformers support
    save_model(varied_segmenter(), old, card="---\nlicense: mit\n---\n# seg\n")
    for name in remote_code.transformers_files(PYRAMID):
        (old / name).unlink()
    (old / "config.json").write_text(json.dumps(PYRAMID.to_dict(), indent=2))
    push(run_cli, old, "me/seg")  # push adds what transformers needs
    assert json.loads(hub.files_at("me/seg")["config.json"]) == remote_code.config_data(PYRAMID)

    images = tmp_path / "images"
    images.mkdir()
    for seed, (height, width) in enumerate(SIZES):
        scene(seed, (height, width))[0].save(images / f"scene{seed}.png")
    paths = sorted(images.iterdir())
    result = run_cli("predict", *paths, "--model", "me/seg", "--output-dir", tmp_path / "masks")
    assert result.exit_code == 0, result.stderr

    segmenter = pipeline("image-segmentation", model="me/seg", trust_remote_code=True)
    assert type(segmenter.image_processor).__name__ == "GFNetSegmentationImageProcessor"
    label2id = segmenter.model.config.label2id
    found = set()
    for path in paths:
        segments = segmenter(str(path))
        expected = np.asarray(Image.open(tmp_path / "masks" / f"{path.stem}.png"))
        np.testing.assert_array_equal(class_map(segments, label2id), expected)
        found |= {segment["label"] for segment in segments}
    assert len(found) >= 2  # the comparison is not of one-class maps

    # the processor's pixels are gfnet's, bit for bit; its labels follow them
    processor = AutoImageProcessor.from_pretrained("me/seg", trust_remote_code=True)
    image, mask = scene(3, (57, 31))
    transform = SegmentationEvalTransform(32, PYRAMID.mean, PYRAMID.std)
    batch = processor(image, segmentation_maps=mask, return_tensors="pt")
    assert torch.equal(batch["pixel_values"][0], transform.image(image))
    assert batch["labels"].shape == (1, 59, 32) and batch["labels"].dtype == torch.long
    assert set(batch["labels"].unique().tolist()) <= {0, 1, 2, 255}
    at_size = np.asarray(Image.fromarray(mask).resize((32, 59), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(batch["labels"][0].numpy(), at_size)
    reduced = processor(image, segmentation_maps=mask, do_reduce_labels=True)["labels"][0]
    expected = at_size.astype(np.int64) - 1  # ADE20K's 0 ("other") ignored, 1..N as 0..N-1
    expected[(at_size == 0) | (at_size == 255)] = 255
    np.testing.assert_array_equal(reduced, expected)
    with pytest.raises(ValueError, match="different sizes"):
        processor([image, scene(0)[0]], return_tensors="pt")


@pytest.mark.slow
def test_a_finetuned_folder_loads_in_the_pipeline_as_gfnet_predicts_it(run_cli, tmp_path):
    from transformers import pipeline

    from tests.test_segmentation_finetune import BACKBONE

    save_model(create_model(BACKBONE), tmp_path / "backbone")
    data = mask_folder(tmp_path / "data", count=2)
    (tmp_path / "labels.txt").write_text("sky\nroad\ntree\n")
    run = tmp_path / "run"
    result = run_cli(
        "finetune", "--task", "segmentation", "--model", tmp_path / "backbone", "--dataset",
        data, "--output-dir", run, "--img-size", "32", "--epochs", "1", "--batch-size", "2",
        "--num-workers", "0", "--labels", tmp_path / "labels.txt",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads((run / "config.json").read_text())["architectures"] == [
        "GFNetForSemanticSegmentation"
    ]
    paths = sorted((data / "images" / "validation").iterdir())
    result = run_cli("predict", *paths, "--model", run, "--output-dir", tmp_path / "masks")
    assert result.exit_code == 0, result.stderr
    segmenter = pipeline("image-segmentation", model=str(run), trust_remote_code=True)
    assert segmenter.model.config.id2label == {0: "sky", 1: "road", 2: "tree"}
    for path in paths:
        expected = np.asarray(Image.open(tmp_path / "masks" / f"{path.stem}.png"))
        classes = class_map(segmenter(str(path)), segmenter.model.config.label2id)
        np.testing.assert_array_equal(classes, expected)


# ---------------------------------------------------------------------------- Trainer
def test_trainer_finetunes_a_new_head_and_gfnet_reads_the_result(tmp_path, run_cli):
    from datasets import Dataset
    from transformers import AutoImageProcessor, Trainer, TrainingArguments

    base = tmp_path / "base"
    save_model(tiny_segmenter(), base)
    names = ["sky", "road", "tree", "car"]
    model = auto_model(
        str(base), num_labels=4, id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)}, ignore_mismatched_sizes=True,
    )  # fmt: skip
    # built on the meta device, the checkpoint loaded, the new classifier given its init
    assert not any(t.is_meta for t in model.state_dict().values())
    classifier = model.gfnet.decode_head.conv_seg
    assert classifier.weight.shape[0] == 4 and torch.equal(classifier.bias, torch.zeros(4))
    assert 0.003 < classifier.weight.std() < 0.03  # N(0, 0.01), as mmsegmentation's
    loaded = load_model(str(base))
    assert torch.equal(model.gfnet.neck.fpn_convs[0].conv.weight,
                       loaded.neck.fpn_convs[0].conv.weight)  # fmt: skip

    processor = AutoImageProcessor.from_pretrained(str(base), trust_remote_code=True)
    pairs = [scene(seed, (40, 48)) for seed in range(4)]
    dataset = Dataset.from_dict(
        {"image": [image for image, _ in pairs], "mask": [Image.fromarray(m) for _, m in pairs]}
    )
    dataset.set_transform(lambda batch: dict(processor(
        batch["image"], segmentation_maps=batch["mask"], return_tensors="pt")))  # fmt: skip
    before = classifier.weight.detach().clone()
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2,
        learning_rate=1e-2, report_to=[], remove_unused_columns=False, use_cpu=True,
        save_strategy="no", logging_steps=1, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert not torch.equal(before, model.gfnet.decode_head.conv_seg.weight)

    saved = tmp_path / "trained"
    trainer.save_model(str(saved))  # weights under transformers' "gfnet." prefix
    ours = load_model(str(saved))
    assert ours.config.class_names == names and ours.config.is_segmentation
    pixels = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels), model.eval()(pixel_values=pixels).logits,
                                   atol=1e-5, rtol=0)  # fmt: skip
    reloaded = AutoImageProcessor.from_pretrained(str(saved), trust_remote_code=True)
    assert type(reloaded).__name__ == "GFNetSegmentationImageProcessor"
    assert reloaded.size == {"shortest_edge": 32} and not reloaded.do_reduce_labels
    image_path = tmp_path / "street.png"
    pairs[0][0].save(image_path)
    result = run_cli("predict", image_path, "--model", saved, "--json")
    assert result.exit_code == 0, result.stderr
    assert {p["label"] for p in result.json()[0]["predictions"]} <= set(names)


# ---------------------------------------------------------------------------- card
def test_segmentation_card_snippets_run_as_written(run_cli, hub, tmp_path, monkeypatch):  # noqa: F811
    folder = tmp_path / "bare"
    save_model(varied_segmenter(), folder)  # no card: push writes one for the repo
    push(run_cli, folder, "me/seg-card")
    card = ModelCard(hub.files_at("me/seg-card")["README.md"].decode())
    assert card.data.pipeline_tag == "image-segmentation"
    blocks = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(blocks) == 2 and "load_model" in blocks[0] and "pipeline" in blocks[1]

    monkeypatch.chdir(tmp_path)
    image = scene(1, (45, 60))[0]
    image.save(tmp_path / "street.jpg")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["logits"].shape[1] == 3
    assert tuple(namespace["mask"].shape) == (45, 60)

    [command] = [line for line in card.text.splitlines() if line.startswith("gfnet predict")]
    result = run_cli(*command.split()[1:])
    assert result.exit_code == 0, result.stderr
    written = np.asarray(Image.open(tmp_path / "masks" / "street.png"))
    np.testing.assert_array_equal(namespace["mask"].numpy(), written)
