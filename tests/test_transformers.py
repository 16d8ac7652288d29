"""One Hub repository, two libraries: what ``gfnet push`` publishes loads in transformers.

Everything goes through a real ``gfnet push`` to the loopback Hub and the real transformers
(remote code, ``AutoModelForImageClassification``, ``AutoImageProcessor``, ``pipeline``,
``Trainer``), compared with ``gfnet`` on the same tensors and on real photographs
(scikit-image's astronaut, coffee and chelsea).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from gfnet_cli import GFNet, GFNetConfig, load_model
from gfnet_cli.data.transforms import eval_transform
from gfnet_cli.errors import MissingDependencyError
from gfnet_cli.hub import remote_code
from gfnet_cli.hub.serialization import save_model
from tests.hub_server import FakeHub

transformers = pytest.importorskip("transformers")
skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "coffee", "chelsea")
TINY = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3)


@pytest.fixture
def hub(monkeypatch):
    """The loopback Hub, for gfnet (HF_ENDPOINT at call time) and for transformers, whose
    huggingface_hub read the endpoint at import; with a write token."""
    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", server.url)
    monkeypatch.setattr(
        "huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
        server.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    # transformers keeps one HfApi, its endpoint fixed when made: a fresh one for this server
    monkeypatch.setattr("transformers.utils.hub._hf_api", None, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_DISABLE_XET", True)
    server.write_tokens["hf_test_writer"] = "write"
    monkeypatch.setenv("HF_TOKEN", "hf_test_writer")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in PHOTOS:
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skimage_data, name)()).save(path)
        paths.append(path)
    return paths


def push(run_cli, folder: Path, repo_id: str) -> None:
    result = run_cli("push", folder, repo_id)
    assert result.exit_code == 0, result.stderr


def auto_model(repo: str, **kwargs):
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True, **kwargs)


def converted(run_cli, data_dir: Path, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    result = run_cli("convert", data_dir / f"{name}.pth", out)
    assert result.exit_code == 0, result.stderr
    return out


def finetuned(run_cli, base: Path, tmp_path: Path) -> Path:
    """``gfnet finetune`` of ``base`` on three coloured classes: a new head with names."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(["red", "green", "blue"]):
        folder = tmp_path / "data" / "train" / name
        folder.mkdir(parents=True)
        for i in range(4):
            array = rng.integers(0, 60, size=(24, 28, 3), dtype=np.uint8)
            array[..., index] += 150
            Image.fromarray(array).save(folder / f"{i}.png")
    out = tmp_path / "finetuned"
    result = run_cli(
        "finetune", "--model", base, "--dataset", tmp_path / "data", "--output-dir", out,
        "--epochs", "1", "--batch-size", "4", "--num-workers", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return out


def model_of_kind(run_cli, data_dir: Path, tmp_path: Path, kind: str) -> Path:
    """A MODEL folder: the authors' tiny flat checkpoint converted, their pyramid one, or the
    flat one fine-tuned by ``gfnet finetune``."""
    name = "tiny-gfnet-h" if kind == "pyramid" else "tiny-gfnet"
    folder = converted(run_cli, data_dir, tmp_path, name)
    return finetuned(run_cli, folder, tmp_path) if kind == "finetuned" else folder


def assert_same_logits(repo: str, model, size: int) -> None:
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = load_model(repo)(pixels)
        theirs = model(pixel_values=pixels).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- logits
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["converted", "pyramid", "finetuned"])
def test_transformers_logits_equal_gfnet_through_push(run_cli, hub, data_dir, tmp_path, kind):
    folder = model_of_kind(run_cli, data_dir, tmp_path, kind)
    repo = f"me/{kind}"
    push(run_cli, folder, repo)

    model = auto_model(repo)
    assert type(model).__name__ == "GFNetForImageClassification" and not model.training
    assert model.config.id2label == dict(enumerate(load_model(repo).config.labels))
    assert_same_logits(repo, model, 64)

    labels = torch.tensor([0, 1])
    output = model(pixel_values=torch.randn(2, 3, 64, 64), labels=labels)
    expected = torch.nn.functional.cross_entropy(output.logits, labels)
    torch.testing.assert_close(output.loss, expected)


def test_transformers_save_pretrained_is_a_model_folder(run_cli, hub, tmp_path, photos):
    folder = tmp_path / "tiny"
    save_model(GFNet(TINY.replace(class_names=["a", "b", "c"])).eval(), folder)
    push(run_cli, folder, "me/tiny")
    model = auto_model("me/tiny")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        output = model(pixel_values=pixels, output_hidden_states=True)
        [logits] = model(pixel_values=pixels, return_dict=False)
    assert [tuple(h.shape) for h in output.hidden_states] == [(2, 16, 4, 4)]  # one per block
    torch.testing.assert_close(output.logits, logits, rtol=0, atol=0)
    saved = tmp_path / "saved-by-transformers"
    model.save_pretrained(saved)  # weights under transformers' "gfnet." prefix

    result = run_cli("predict", photos[0], "--model", saved, "--json", "--top-k", "3")
    assert result.exit_code == 0, result.stderr
    [entry] = result.json()
    pixels = eval_transform(TINY)(Image.open(photos[0]).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        scores = model(pixel_values=pixels).logits.softmax(-1)[0]
    assert [p["label"] for p in entry["predictions"]] == [
        ["a", "b", "c"][i] for i in scores.argsort(descending=True).tolist()
    ]
    assert load_model(str(saved)).config.class_names == ["a", "b", "c"]


# ---------------------------------------------------------------------------- pipeline
@pytest.mark.slow
@pytest.mark.parametrize("size", [224, 384])
@pytest.mark.parametrize("kind", ["converted", "pyramid", "finetuned"])
def test_pipeline_top5_equals_gfnet_predict_on_photographs(
    run_cli, hub, data_dir, tmp_path, photos, kind, size
):
    from transformers import pipeline

    folder = tmp_path / f"{kind}-{size}"
    base = model_of_kind(run_cli, data_dir, tmp_path, kind)
    load_model(str(base), img_size=size).save_pretrained(folder)  # the model at that size
    repo = f"me/{kind}-{size}"
    push(run_cli, folder, repo)

    result = run_cli("predict", *photos, "--model", repo, "--top-k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    ours = {Path(entry["image"]).name: entry["predictions"] for entry in result.json()}
    classifier = pipeline("image-classification", model=repo, trust_remote_code=True)
    assert classifier.image_processor.crop_size == {"height": size, "width": size}
    assert_same_logits(repo, classifier.model, size)
    for path in photos:
        theirs = classifier(str(path), top_k=5)
        assert [p["label"] for p in theirs] == [p["label"] for p in ours[path.name]]
        np.testing.assert_allclose(
            [p["score"] for p in theirs], [p["score"] for p in ours[path.name]], atol=1e-4
        )


# ---------------------------------------------------------------------------- processor
@pytest.mark.parametrize("size", [224, 384])
def test_processor_gives_gfnet_predict_pixels_bit_for_bit(tmp_path, photos, size):
    from transformers import AutoImageProcessor, CLIPImageProcessorPil

    config = TINY.replace(img_size=size)
    folder = tmp_path / "m"
    save_model(GFNet(config), folder)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    # The torchvision backend would resize differently: there is none to pick.
    fast = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True, backend="torchvision")
    assert type(processor).__name__ == type(fast).__name__ == "GFNetImageProcessor"

    # Margins the crop halves: even, and odd both ways (2k+1 with k even, and with k odd,
    # where rounding half to even, as torchvision does, and flooring part).
    resize = json.loads((folder / remote_code.PREPROCESSOR_NAME).read_text())["size"]
    short = resize["shortest_edge"]
    odd_margin = short + (3 - (short - size)) % 4  # width - size = 3 (mod 4)
    rng = np.random.default_rng(size)
    odd = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
           for h, w in [(301, 459), (517, 389), (short, odd_margin),
                        (odd_margin + 2, short)]]  # fmt: skip
    images = [Image.open(path) for path in photos] + odd
    transform = eval_transform(config)
    expected = torch.stack([transform(image.convert("RGB")) for image in images])
    assert torch.equal(processor(images, return_tensors="pt")["pixel_values"], expected)
    arrays = [np.asarray(image.convert("RGB")) for image in images]
    assert torch.equal(processor(arrays, return_tensors="pt")["pixel_values"], expected)

    # Why a processor of our own: the stock one crops one pixel off on odd margins.
    settings = json.loads((folder / remote_code.PREPROCESSOR_NAME).read_text())
    stock = CLIPImageProcessorPil(
        size=settings["size"], crop_size=settings["crop_size"], resample=settings["resample"],
        image_mean=settings["image_mean"], image_std=settings["image_std"],
    )  # fmt: skip
    stock_pixels = torch.from_numpy(stock(odd, return_tensors="np")["pixel_values"])
    assert not torch.equal(stock_pixels, expected[len(photos) :])


# ---------------------------------------------------------------------------- Trainer
@pytest.mark.slow
def test_trainer_finetunes_the_loaded_model_and_gfnet_predict_reads_it(
    run_cli, hub, tmp_path, photos
):
    from datasets import Dataset
    from transformers import AutoImageProcessor, Trainer, TrainingArguments, pipeline

    folder = tmp_path / "base"
    save_model(GFNet(TINY).eval(), folder)
    push(run_cli, folder, "me/base")
    names = ["red", "green", "blue"]
    model = auto_model(
        "me/base",
        num_labels=3,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    # Built on the meta device, the checkpoint loaded, the new head given the authors' init.
    assert not any(t.is_meta for t in model.state_dict().values())
    head = model.gfnet.head
    assert torch.equal(head.bias, torch.zeros(3)) and 0.01 < head.weight.std() < 0.03
    processor = AutoImageProcessor.from_pretrained("me/base", trust_remote_code=True)
    rng = np.random.default_rng(0)
    images, labels = [], []
    for index in range(3):
        for _ in range(4):
            array = rng.integers(0, 60, size=(40, 48, 3), dtype=np.uint8)
            array[..., index] += 150
            images.append(Image.fromarray(array))
            labels.append(index)
    dataset = Dataset.from_dict({"image": images, "label": labels})
    dataset.set_transform(
        lambda batch: {
            "pixel_values": processor(batch["image"], return_tensors="pt")["pixel_values"],
            "labels": batch["label"],
        }
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert not torch.equal(before["gfnet.head.weight"], model.state_dict()["gfnet.head.weight"])

    saved = tmp_path / "trained"
    trainer.save_model(str(saved))  # the model, and the processor beside it
    result = run_cli("predict", *photos, "--model", saved, "--top-k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert load_model(str(saved)).config.class_names == names
    classifier = pipeline("image-classification", model=str(saved), trust_remote_code=True)
    for entry, path in zip(result.json(), photos, strict=True):
        theirs = classifier(str(path), top_k=3)
        assert [p["label"] for p in theirs] == [p["label"] for p in entry["predictions"]]
        np.testing.assert_allclose(
            [p["score"] for p in theirs], [p["score"] for p in entry["predictions"]], atol=1e-4
        )


# ---------------------------------------------------------------------------- old repositories
def test_repo_pushed_before_loads_and_the_next_push_adds_the_files(run_cli, hub, tmp_path):
    model = GFNet(TINY).eval()
    old = tmp_path / "old"
    save_model(model, old, card="---\nlicense: mit\n---\n# old\n")
    for name in remote_code.transformers_files(TINY):  # as a folder written before
        (old / name).unlink()
    (old / "config.json").write_text(json.dumps(TINY.to_dict(), indent=2))
    hub.add_repo("me/old", {p.name: p.read_bytes() for p in old.iterdir()})
    assert torch.equal(load_model("me/old").head.weight, model.head.weight)

    dry = run_cli("push", old, "me/old", "--dry-run", "--json")
    assert sorted(dry.json()["files"]) == sorted(
        ["README.md", "config.json", "model.safetensors", *remote_code.transformers_files(TINY)]
    )
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    push(run_cli, old, "me/old")
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before  # the folder is untouched
    pushed = hub.files_at("me/old")
    assert json.loads(pushed["config.json"]) == remote_code.config_data(TINY)
    assert_same_logits("me/old", auto_model("me/old"), 32)


# ---------------------------------------------------------------------------- card
def test_card_snippets_run_as_written(run_cli, hub, tmp_path, photos, monkeypatch):
    folder = tmp_path / "bare"
    save_model(GFNet(TINY).eval(), folder)  # no card: push writes one for the repo
    push(run_cli, folder, "me/card")
    card = ModelCard(hub.files_at("me/card")["README.md"].decode())
    blocks = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(blocks) == 2 and "load_model" in blocks[0] and "pipeline" in blocks[1]

    monkeypatch.chdir(tmp_path)
    Image.open(photos[2]).save(tmp_path / "cat.jpg")
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["logits"].shape == (1, 3)
    [command] = [line for line in card.text.splitlines() if line.startswith("gfnet predict")]
    result = run_cli(*command.split()[1:])
    assert result.exit_code == 0, result.stderr


# ---------------------------------------------------------------------------- missing pieces
def test_missing_or_old_transformers_is_one_line_naming_the_extra(monkeypatch):
    from gfnet_cli.hub import transformers_classes

    # sys.modules' entry: transformers' lazy module replaces the one imported at the top
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.57.1")
    with pytest.raises(MissingDependencyError) as old:
        transformers_classes.require_transformers()
    message = str(old.value)
    assert "transformers>=" in message and "4.57.1" in message
    assert "pip install '.[transformers]' in the gfnet-cli clone" in message
    assert "\n" not in message

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError) as missing:
        transformers_classes.require_transformers()
    assert str(missing.value).endswith("pip install '.[transformers]' in the gfnet-cli clone")


def test_remote_code_without_gfnet_cli_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gfnet_cli.hub.transformers_classes", None)
    with pytest.raises(ImportError) as error:
        exec(compile(remote_code.CONFIGURATION_CODE, "configuration_gfnet.py", "exec"), {})  # noqa: S102
    assert "pip install '.[transformers]' in a clone" in str(error.value)

