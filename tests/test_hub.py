"""Hub integration against a loopback server: the real huggingface_hub download code,
MODEL resolution (folder, org/name[@rev], zoo name), offline reuse, the authors'-link
fallback, every error row, model cards, and push: real uploads to the loopback server,
downloaded back with the real client."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, snapshot_download

from gfnet_cli import GFNet, GFNetConfig, convert_checkpoint, load_model
from gfnet_cli.hub.remote_code import config_data
from gfnet_cli.hub.serialization import save_model
from tests.conftest import assert_one_line_error
from tests.hub_server import FakeHub

TINY = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3)
# What every writer puts in a MODEL folder (with its card): ours, and transformers' files.
MODEL_FILES = sorted(
    [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "configuration_gfnet.py",
        "modeling_gfnet.py",
        "image_processing_gfnet.py",
    ]
)


def tiny_model(seed: int = 0, config: GFNetConfig = TINY) -> GFNet:
    torch.manual_seed(seed)
    return GFNet(config).eval()


def model_files(tmp_path: Path, seed: int = 0, config: GFNetConfig = TINY) -> dict[str, bytes]:
    folder = tmp_path / f"model-{seed}"
    save_model(tiny_model(seed, config), folder, card="---\nlicense: mit\n---\n# tiny\n")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def same_weights(a: GFNet, b: GFNet) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture
def hub(monkeypatch):
    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("GFNET_HUB_ORG", "testorg")
    monkeypatch.setenv("GFNET_ZOO_MIRROR", f"{server.url}/mirror")
    # Uploads take the plain LFS protocol (the loopback server speaks no Xet); huggingface_hub
    # reads the variable once at import, so its constant is set too.
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_DISABLE_XET", True)
    yield server
    server.stop()


@pytest.fixture
def no_backoff(monkeypatch):
    """huggingface_hub retries an unreachable server for ~20 s; the tests need not wait."""
    monkeypatch.setattr(
        "huggingface_hub.utils._http.time", types.SimpleNamespace(sleep=lambda seconds: None)
    )


# ---------------------------------------------------------------------------- MODEL kinds
def test_local_folder_through_load_model_and_download(run_cli, tmp_path):
    folder = tmp_path / "m"
    original = tiny_model()
    save_model(original, folder)
    assert same_weights(load_model(str(folder)), original)
    result = run_cli("download", folder)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(folder)


def test_hub_repo_downloads_only_model_files_then_works_offline(
    hub, run_cli, tmp_path, monkeypatch
):
    files = model_files(tmp_path) | {"pytorch_model.bin": b"never fetched", "big.txt": b"x"}
    commit = hub.add_repo("org/tiny", files)
    result = run_cli("download", "org/tiny")
    assert result.exit_code == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.name == commit and "models--org--tiny" in str(folder)
    assert str(folder).startswith(str(Path(os.environ["HF_HOME"])))
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    fetched = {path.rsplit("/", 1)[-1] for _, path in hub.requests}
    assert fetched == {"config.json", "model.safetensors", "README.md"}
    assert same_weights(load_model("org/tiny"), tiny_model())

    hub.stop()  # the network is gone and offline mode is on: the cache is enough
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = run_cli("download", "org/tiny")
    assert again.exit_code == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(folder)
    assert same_weights(load_model("org/tiny"), tiny_model())


def test_server_down_without_offline_mode_uses_the_cache(hub, tmp_path):
    hub.add_repo("org/tiny", model_files(tmp_path))
    load_model("org/tiny")
    hub.stop()
    assert same_weights(load_model("org/tiny"), tiny_model())


def test_revisions_by_suffix_and_option(hub, run_cli, tmp_path):
    hub.add_repo("org/tiny", model_files(tmp_path, seed=0))
    v1 = hub.add_repo("org/tiny", model_files(tmp_path, seed=1), revision="v1")
    assert same_weights(load_model("org/tiny@v1"), tiny_model(1))
    assert same_weights(load_model("org/tiny", revision="v1"), tiny_model(1))
    assert same_weights(load_model("org/tiny"), tiny_model(0))
    result = run_cli("download", "org/tiny", "--revision", "v1", "--json")
    assert result.exit_code == 0, result.stderr
    assert Path(result.json()["path"]).name == v1


def test_resolve_config_fetches_only_the_config(hub, tmp_path):
    from gfnet_cli.hub.resolve import resolve_config

    hub.add_repo("org/tiny", model_files(tmp_path))
    assert resolve_config("org/tiny") == TINY
    assert {path for _, path in hub.requests} == {"/org/tiny/resolve/main/config.json"}
    before = len(hub.requests)
    assert resolve_config("gfnet-h-ti").kind == "pyramid"  # no download at all
    assert len(hub.requests) == before


def test_resolve_config_of_a_folder_and_of_a_pinned_zoo_name(hub, tmp_path):
    from gfnet_cli.hub.resolve import resolve_config

    folder = tmp_path / "m"
    save_model(tiny_model(), folder)
    assert resolve_config(str(folder)) == TINY
    hub.add_repo("testorg/gfnet-xs", model_files(tmp_path), revision="v1")
    assert resolve_config("gfnet-xs@v1") == TINY  # that revision's config.json, nothing else
    assert {path for _, path in hub.requests} == {"/testorg/gfnet-xs/resolve/v1/config.json"}


def test_zoo_name_from_the_project_hub_org(hub, run_cli, tmp_path):
    hub.add_repo("testorg/gfnet-xs", model_files(tmp_path, seed=2))
    assert same_weights(load_model("gfnet-xs"), tiny_model(2))
    result = run_cli("download", "gfnet-xs")
    assert result.exit_code == 0, result.stderr
    assert "models--testorg--gfnet-xs" in result.stdout


@pytest.fixture(scope="module")
def authors_checkpoint(tmp_path_factory) -> tuple[bytes, GFNet]:
    """A gfnet-ti-shaped checkpoint saved the way the authors' training script saves one."""
    from gfnet_cli.models.zoo import get_zoo_entry

    config = get_zoo_entry("gfnet-ti").config(img_size=32, num_classes=4)
    model = tiny_model(3, config)
    path = tmp_path_factory.mktemp("authors") / "checkpoint.pth"
    args = argparse.Namespace(model="gfnet-ti", lr=1e-3, input_size=224)
    torch.save({"model": model.state_dict(), "epoch": 1, "args": args}, path)
    return path.read_bytes(), model


def test_zoo_name_falls_back_to_the_authors_checkpoint_once(
    hub, run_cli, monkeypatch, authors_checkpoint
):
    body, original = authors_checkpoint
    hub.files["/mirror/gfnet-ti.pth"] = body
    model = load_model("gfnet-ti")
    assert same_weights(model, original)
    assert model.config.architecture == "gfnet-ti"
    cache = Path(os.environ["HF_HOME"]) / "gfnet"
    folder = cache / "zoo" / "gfnet-ti"
    assert sorted(p.name for p in folder.iterdir()) == MODEL_FILES
    assert not any((cache / "downloads").iterdir())  # the raw pickle is not kept
    assert ModelCard.load(folder / "README.md").data.library_name == "gfnet-cli"
    assert [p for _, p in hub.requests].count("/mirror/gfnet-ti.pth") == 1

    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("download", "gfnet-ti")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(folder)
    assert same_weights(load_model("gfnet-ti"), original)


def test_zoo_name_uses_the_authors_link_when_the_hub_is_unreachable(
    hub, run_cli, monkeypatch, authors_checkpoint, no_backoff
):
    body, original = authors_checkpoint
    hub.files["/mirror/gfnet-ti.pth"] = body
    closed = FakeHub().start()
    closed.stop()
    monkeypatch.setenv("HF_ENDPOINT", closed.url)
    assert same_weights(load_model("gfnet-ti"), original)
    hub.stop()
    result = run_cli("download", "gfnet-h-ti")
    assert_one_line_error(result, 2, "nor the authors' link")


def test_convert_zoo_name_uses_the_same_link(hub, run_cli, tmp_path, authors_checkpoint):
    body, original = authors_checkpoint
    hub.files["/mirror/gfnet-ti.pth"] = body
    result = run_cli("convert", "gfnet-ti", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert same_weights(load_model(str(tmp_path / "out")), original)


# ---------------------------------------------------------------------------- errors
def _config_bytes(**changes) -> bytes:
    return json.dumps(TINY.replace(**changes).to_dict()).encode()


ERROR_ROWS = {
    "repo not found": ("org/missing", {}, "no such repository"),
    "file missing": ("org/noweights", {"drop": "model.safetensors"}, "has no model.safetensors"),
    "config missing": ("org/noconfig", {"drop": "config.json"}, "has no config.json"),
    "unknown revision": ("org/tiny@nope", {}, "no such revision"),
    "private": ("org/private", {"access": "private", "token": "t"}, "private"),
    "gated": ("org/gated", {"access": "gated"}, "gated"),
    "forbidden": ("org/forbidden", {"access": "forbidden"}, "403"),
    "corrupt weights": ("org/corrupt", {"weights": "truncate"}, "truncated or corrupt"),
    "invalid config": ("org/badconfig", {"config": b"{not json"}, "not valid JSON"),
    "config disagrees": ("org/mismatch", {"config": "wider"}, "disagree"),
    "unknown name": ("nonsense", {}, "not a Hub repository id"),
}


@pytest.mark.parametrize("row", list(ERROR_ROWS))
def test_error_rows_are_one_line_exit_2(hub, run_cli, tmp_path, row):
    model, setup, expected = ERROR_ROWS[row]
    files = model_files(tmp_path)
    files.pop(setup.get("drop", ""), None)
    if setup.get("weights") == "truncate":
        files["model.safetensors"] = files["model.safetensors"][:-100]
    if setup.get("config") == "wider":
        files["config.json"] = _config_bytes(embed_dim=24)
    elif "config" in setup:
        files["config.json"] = setup["config"]
    options = {k: v for k, v in setup.items() if k in ("access", "token")}
    repo_id = model.split("@")[0]
    if repo_id != "org/missing" and "/" in repo_id:
        hub.add_repo(repo_id, files, **options)
    result = run_cli("download", model)
    assert_one_line_error(result, 2, expected)
    with pytest.raises(Exception) as info:
        load_model(model)
    assert getattr(info.value, "exit_code", None) == 2


def test_invalid_token_is_a_one_line_error(hub, run_cli, tmp_path, monkeypatch):
    hub.add_repo("org/private", model_files(tmp_path), access="private", token="right")
    monkeypatch.setenv("HF_TOKEN", "wrong")
    assert_one_line_error(run_cli("download", "org/private"), 2, "401")
    monkeypatch.setenv("HF_TOKEN", "right")
    assert run_cli("download", "org/private").exit_code == 0


def test_network_unreachable(hub, run_cli, no_backoff):
    hub.stop()
    assert_one_line_error(run_cli("download", "org/tiny"), 2, "cannot reach the Hub")


ROOT = Path(__file__).resolve().parents[1]  # this checkout's gfnet_cli, in the subprocess too
_TIMED_CLI = """
import json, sys, time
import huggingface_hub.file_download, gfnet_cli.hub.resolve  # imports are not the wait
import datasets, torch, gfnet_cli.engine.train
from gfnet_cli.cli.main import main
started = time.perf_counter()
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "seconds": time.perf_counter() - started}))
"""


@pytest.mark.parametrize(
    ("command", "offline"),
    [(["download", "org/tiny"], False), (["predict", "x.png", "-m", "org/tiny"], True),
     (["predict", "x.png", "-m", "org/tiny"], False),
     (["finetune", "-m", "gfnet-ti", "--from-scratch", "--patch-size", "8", "--embed-dim", "8",
       "--depth", "1", "--img-size", "16", "--dataset", "org/data", "--output-dir", "o"], False),
     (["evaluate", "-m", "org/tiny", "--dataset", "org/data"], True)],
)  # fmt: skip
def test_unreachable_hub_fails_fast_in_one_line(tmp_path, offline, command):
    # A fresh interpreter, huggingface_hub's own logging and back-off untouched: a closed
    # loopback port is what a machine without network answers.
    closed = FakeHub().start()
    closed.stop()
    env = {**os.environ, "HF_ENDPOINT": closed.url, "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    (tmp_path / "x.png").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-c", _TIMED_CLI, *command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert report["code"] == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("Error:"), proc.stderr
    assert ("HF_HUB_OFFLINE" if offline else "cannot reach the Hub") in lines[0]
    assert report["seconds"] <= 5, report


@pytest.mark.parametrize("model", ["org/tiny", "gfnet-xs"])
def test_offline_with_empty_cache(hub, run_cli, monkeypatch, model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_one_line_error(run_cli("download", model), 2, "HF_HUB_OFFLINE")
    assert hub.requests == []


def test_cut_off_download_leaves_nothing_valid(hub, run_cli, tmp_path, monkeypatch):
    files = model_files(tmp_path)
    hub.add_repo("org/tiny", files)
    hub.short["org/tiny/model.safetensors"] = len(files["model.safetensors"]) // 2
    assert_one_line_error(run_cli("download", "org/tiny"), 2, "cut short")
    blobs = Path(os.environ["HF_HOME"]) / "hub" / "models--org--tiny" / "blobs"
    sizes = sorted(p.stat().st_size for p in blobs.iterdir())
    assert len(files["model.safetensors"]) // 2 not in sizes
    assert not any(p.name.endswith(".incomplete") for p in blobs.iterdir())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the next run does not take anything as valid
    assert_one_line_error(run_cli("download", "org/tiny"), 2, "HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub.short.clear()
    assert run_cli("download", "org/tiny").exit_code == 0


def test_corrupt_cached_weights_are_reported_and_repaired(hub, run_cli, tmp_path):
    hub.add_repo("org/tiny", model_files(tmp_path))
    folder = Path(run_cli("download", "org/tiny").stdout.strip().splitlines()[-1])
    blob = (folder / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-64])
    assert_one_line_error(run_cli("download", "org/tiny"), 2, "--force-download")
    assert run_cli("download", "org/tiny", "--force-download").exit_code == 0
    assert same_weights(load_model("org/tiny"), tiny_model())


@pytest.mark.parametrize("cut", [True, False])
def test_authors_link_failures(hub, run_cli, authors_checkpoint, cut):
    body, _ = authors_checkpoint
    if cut:
        hub.files["/mirror/gfnet-ti.pth"] = body
        hub.short["/mirror/gfnet-ti.pth"] = len(body) // 3
        expected = "cut short"
    else:
        expected = "404"
    assert_one_line_error(run_cli("download", "gfnet-ti"), 2, expected)
    cache = Path(os.environ["HF_HOME"]) / "gfnet"
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert leftovers == []


def test_two_different_revisions_name_the_parameter():
    from gfnet_cli.errors import UsageError
    from gfnet_cli.hub.resolve import resolve_model

    with pytest.raises(UsageError, match="pins 'v1', but revision is 'v2'") as info:
        resolve_model("org/tiny@v1", revision="v2")
    assert info.value.param == "revision"


def test_local_folder_errors(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("download", tmp_path / "empty"), 2, "without config.json")
    (tmp_path / "weights.pth").write_bytes(b"x")
    assert_one_line_error(run_cli("download", tmp_path / "weights.pth"), 2, "gfnet convert")


# ---------------------------------------------------------------------------- cards
def test_card_written_by_convert_loads_and_validates(data_dir, tmp_path):
    convert_checkpoint(data_dir / "tiny-gfnet.pth", tmp_path / "m")
    card = ModelCard.load(tmp_path / "m" / "README.md")
    data = card.data
    assert data.library_name == "gfnet-cli"
    assert data.pipeline_tag == "image-classification"
    assert data.license == "mit"
    assert "gfnet" in data.tags
    ModelCard(str(card))  # the metadata block parses strictly
    assert "gfnet predict" in card.text and "load_model(" in card.text
    assert "@inproceedings{rao2021global" in card.text
    assert "GFLOPs" in card.text and "64 x 64" in card.text
    assert card.text.lstrip().startswith("# GFNet converted from tiny-gfnet.pth\n")  # named
    assert str(data_dir) not in str(card)  # the trainer's paths stay on the trainer's disk


def test_card_for_a_fine_tuned_model_has_training_and_results():
    from gfnet_cli.hub.card import model_card

    text = model_card(
        TINY,
        num_params=1234,
        repo_id="me/tiny-cifar",
        base_model="testorg/gfnet-xs",
        dataset="cifar10",
        hyperparameters={"lr": 0.001, "epochs": 3},
        eval_results={
            "top1": 0.9,
            "top5": 0.99,
            "loss": 0.3,
            "dataset": "cifar10",
            "split": "test",
        },
    )
    card = ModelCard(text)
    assert card.data.base_model == "testorg/gfnet-xs"
    assert card.data.datasets == ["cifar10"]
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["accuracy"].metric_value == 0.9
    assert results["accuracy"].dataset_split == "test"
    assert card.data.model_name == "tiny-cifar"
    assert "| peak learning rate | 0.001 |" in card.text and "90.00" in card.text
    assert 'load_model("me/tiny-cifar")' in card.text


@pytest.mark.parametrize(
    ("base_model", "dataset", "metadata", "datasets"),
    [
        ("org/base@v1", "org/pets", "org/base", ["org/pets"]),  # the revision is no model id
        ("LOCAL", "LOCAL", None, None),  # paths on the trainer's disk are not Hub ids
        ("gfnet-ti", "cifar10", None, ["cifar10"]),  # the authors' checkpoint: not on the Hub
    ],
)
def test_card_metadata_names_only_hub_repositories(tmp_path, monkeypatch, base_model, dataset,
                                                   metadata, datasets):  # fmt: skip
    """The Hub refuses a card whose base_model is not a model id, so a fine-tuned model's
    card names its base and dataset in the metadata only when they are Hub repositories."""
    from gfnet_cli.hub.card import model_card

    local = tmp_path / "runs" / "base"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    base_model = "runs/base" if base_model == "LOCAL" else base_model  # looks like org/name
    dataset = "runs" if dataset == "LOCAL" else dataset
    card = ModelCard(model_card(TINY, base_model=base_model, dataset=dataset))
    assert card.data.base_model == metadata
    assert card.data.datasets == datasets
    shown = "base" if base_model == "runs/base" else base_model  # a folder by its name only
    assert f"Fine-tuned from `{shown}`" in card.text  # the body still says where from
    assert str(tmp_path) not in card.text
    assert ("https://huggingface.co/org/base)" in card.text) == (metadata is not None)


def _metadata_problems(text: str) -> list[str]:
    """What huggingface_hub's own parsing of a card's metadata finds wrong (the Hub runs the
    same checks before it accepts a README)."""
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard(text)  # raises on YAML the Hub refuses
    metadata = card.data.to_dict()
    problems = []
    if "model-index" in metadata:
        name, results = model_index_to_eval_results(metadata["model-index"])
        problems += [f"result without split: {r.dataset_type}" for r in results
                     if not r.dataset_split]  # fmt: skip
        problems += [f"not a Hub dataset: {r.dataset_type}" for r in results
                     if r.dataset_type in ("custom", "custom/custom") or "/" in r.dataset_type
                     and r.dataset_type.startswith(("/", "."))]  # fmt: skip
    ModelCardData(**metadata)  # every field of the metadata parses
    return problems


@pytest.mark.parametrize("dataset", ["LOCAL", "org/pets"])
def test_a_trained_models_card_is_worth_publishing(tmp_path, monkeypatch, dataset):
    from gfnet_cli.engine.train import TrainConfig
    from gfnet_cli.engine.train.outputs import EpochStats, training_card
    from gfnet_cli.hub.push import with_repo_id

    folder = tmp_path / "data" / "digits"
    folder.mkdir(parents=True)
    dataset = str(folder) if dataset == "LOCAL" else dataset
    model = GFNet(GFNetConfig(**{**TINY.to_dict(), "num_classes": 30,
                                 "class_names": [f"class-{i}" for i in range(30)]}))  # fmt: skip
    config = TrainConfig(model="gfnet-ti", dataset=dataset, output_dir=tmp_path / "run",
                         augment=False, from_scratch=False)  # fmt: skip
    stats = EpochStats(epoch=3, global_step=30, train_loss=0.5, top1=0.91, top5=0.99,
                       eval_loss=0.4, images_per_second=10.0, is_best=True)  # fmt: skip
    test = {"split": f"{dataset} [test]", "top1": 0.88, "top5": 0.98, "loss": 0.5, "count": 9}
    text = training_card(model, config, stats, head="new",
                         validation_split=f"{dataset} [train[10% held out]]", test=test)
    card = ModelCard(text)
    name = "digits" if dataset.startswith("/") else dataset
    assert card.text.lstrip().startswith(f"# gfnet-ti fine-tuned on {name}\n")
    assert str(tmp_path) not in text  # no path of the trainer's disk
    assert "| None |" not in text and "| False |" not in text
    for switched_off in ("hflip", "horizontal flip", "crop area", "randaugment", "mix"):
        assert switched_off not in card.text.split("## Training")[1].split("## Evaluation")[0]
    assert "| augmentation | none (the evaluation transform) |" in text
    assert f"| {name} | train[10% held out] (chose the epoch) | 91.00 | 99.00 |" in text
    assert f"| {name} | test | 88.00 | 98.00 |" in text
    assert "<details><summary>30 classes</summary>" in text and "`class-29`" in text
    assert "## Intended use" in text and "## Limitations" in text
    assert "pip install gfnet-cli\n" not in text and "pypi.org" not in text
    assert _metadata_problems(text) == []
    if dataset == "org/pets":
        splits = sorted(r.dataset_split for r in card.data.eval_results)
        assert card.data.datasets == ["org/pets"] and "test" in splits
    else:  # a local folder: no model-index (the Hub would link a dataset that does not exist)
        assert card.data.eval_results is None and card.data.datasets is None
    # push names the repository in the usage snippets of the card it sends
    (tmp_path / "README.md").write_text(text)
    pushed = with_repo_id(tmp_path / "README.md", "me/digits-gfnet")
    assert 'load_model("me/digits-gfnet")' in pushed and "path/to/" not in pushed


def test_card_links_a_zoo_base_read_from_a_named_organization(monkeypatch):
    from gfnet_cli.hub.card import model_card

    monkeypatch.setenv("GFNET_HUB_ORG", "myorg")
    assert ModelCard(model_card(TINY, base_model="gfnet-ti")).data.base_model == "myorg/gfnet-ti"


# ---------------------------------------------------------------------------- push
def push_folder_fixture(tmp_path: Path) -> tuple[Path, list[str]]:
    folder = tmp_path / "run"
    save_model(tiny_model(), folder, card="---\nlicense: mit\n---\n# run\n")
    (folder / "train_results.json").write_text('{"epochs": 1}')
    (folder / "eval_results.json").write_text('{"top1": 0.5}')
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    (folder / "plots").mkdir()
    (folder / "plots" / "loss.png").write_bytes(b"\x89PNG")
    sent = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    (folder / "checkpoints" / "step-1").mkdir(parents=True)
    (folder / "checkpoints" / "step-1" / "model.safetensors").write_bytes(b"ckpt")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x").write_text("x")
    (folder / ".hidden").write_text("x")
    (folder / "model.safetensors.tmp").write_text("x")
    (folder / "old.pth").write_bytes(b"pickle")
    return folder, sent


def test_push_dry_run_lists_exactly_the_files(run_cli, tmp_path):
    convert_dir = tmp_path / "converted"
    save_model(tiny_model(), convert_dir, card="# c\n")
    result = run_cli("push", convert_dir, "me/tiny", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == MODEL_FILES

    folder, sent = push_folder_fixture(tmp_path)
    result = run_cli("push", folder, "me/tiny", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["files"] == sent


@pytest.fixture
def writer(hub, monkeypatch) -> str:
    """A token the loopback Hub accepts for writing, set as HF_TOKEN."""
    hub.write_tokens["hf_secret_token"] = "write"
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    return "hf_secret_token"


def downloaded_back(hub: FakeHub, tmp_path: Path, repo_id: str, revision: str) -> Path:
    """The pushed repository, fetched with huggingface_hub's own snapshot download."""
    return Path(
        snapshot_download(
            repo_id, revision=revision, endpoint=hub.url, cache_dir=tmp_path / "downloaded"
        )
    )


def test_push_uploads_one_commit_that_downloads_back(run_cli, hub, writer, tmp_path):
    folder, sent = push_folder_fixture(tmp_path)
    dry = run_cli("push", folder, "me/tiny", "--revision", "exp", "--dry-run", "--json")
    result = run_cli(
        "push", folder, "me/tiny", "--private", "--revision", "exp", "--commit-message", "first"
    )
    assert result.exit_code == 0, result.stderr
    assert writer not in result.stdout + result.stderr

    [commit] = hub.commits  # one commit, holding exactly what the dry run listed
    assert (commit.repo_id, commit.revision, commit.summary) == ("me/tiny", "exp", "first")
    assert commit.paths == sent == dry.json()["files"]
    assert {"model.safetensors", "plots/loss.png"} <= set(commit.lfs_paths)  # via LFS
    repo = hub.repos["me/tiny"]
    assert repo.access == "private"
    assert sorted(hub.files_at("me/tiny", "main")) == [".gitattributes"]  # the branch only

    snapshot = downloaded_back(hub, tmp_path, "me/tiny", "exp")
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert files == sorted([*sent, ".gitattributes"])
    for name in sent:
        assert (snapshot / name).read_bytes() == (folder / name).read_bytes(), name
    assert same_weights(load_model("me/tiny@exp"), tiny_model())


def test_push_generates_a_missing_card_in_a_staged_copy(run_cli, hub, writer, tmp_path):
    folder = tmp_path / "bare"
    save_model(tiny_model(), folder)  # no README.md
    before = sorted(p.name for p in folder.iterdir())
    dry = run_cli("push", folder, "me/bare", "--dry-run", "--json")
    assert dry.json()["files"] == MODEL_FILES
    result = run_cli("push", folder, "me/bare")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == before  # the folder is left as it was
    [commit] = hub.commits
    assert commit.paths == MODEL_FILES
    card = ModelCard.load(downloaded_back(hub, tmp_path, "me/bare", "main") / "README.md")
    assert card.data.library_name == "gfnet-cli"
    assert 'load_model("me/bare")' in card.text


PUSH_ERRORS = {
    "unknown token": ("hf_unknown", None, "401"),
    "read-only token": ("hf_reader", "read", "may not write to me/tiny (403)"),
    "hub unreachable": ("hf_secret_token", "write", "cannot reach the Hub"),
}


@pytest.mark.parametrize("row", list(PUSH_ERRORS))
def test_push_errors_are_one_line_exit_2(run_cli, hub, tmp_path, monkeypatch, no_backoff, row):
    token, rights, expected = PUSH_ERRORS[row]
    if rights:
        hub.write_tokens[token] = rights
    monkeypatch.setenv("HF_TOKEN", token)
    if row == "hub unreachable":
        hub.stop()
    folder = tmp_path / "m"
    save_model(tiny_model(), folder, card="# c\n")
    result = run_cli("push", folder, "me/tiny")
    assert_one_line_error(result, 2, expected)
    assert token not in result.stderr
    assert hub.commits == [] and "me/tiny" not in hub.repos


def test_push_without_token_or_to_a_bad_folder(run_cli, hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.utils._auth.get_token", lambda: None)
    monkeypatch.setattr("huggingface_hub.utils.get_token", lambda: None)
    folder = tmp_path / "m"
    save_model(tiny_model(), folder, card="# c\n")
    assert_one_line_error(run_cli("push", folder, "me/tiny"), 2, "hf auth login")
    assert_one_line_error(run_cli("push", tmp_path / "nope", "me/tiny"), 2, "no such folder")
    assert_one_line_error(run_cli("push", folder, "not-a-repo-id"), 2, "org/name")
    assert hub.requests == []


# ---------------------------------------------------------------------------- the Hub-aware class
def test_save_pretrained_from_pretrained_and_push_to_hub(hub, writer, tmp_path):
    model = tiny_model(4)
    model.save_pretrained(tmp_path / "saved")
    saved = tmp_path / "saved"
    assert sorted(p.name for p in saved.iterdir()) == MODEL_FILES
    assert json.loads((saved / "config.json").read_text()) == config_data(model.config)
    assert ModelCard.load(saved / "README.md").data.library_name == "gfnet-cli"
    assert same_weights(GFNet.from_pretrained(saved), model)

    hub.add_repo("org/mixin", {p.name: p.read_bytes() for p in saved.iterdir()})
    assert same_weights(GFNet.from_pretrained("org/mixin"), model)

    url = model.push_to_hub("me/mixin", commit_message="via the model")
    [commit] = hub.commits
    assert commit.summary == "via the model"
    assert url == f"{hub.url}/me/mixin/commit/{hub.repos['me/mixin'].refs['main']}"
    assert commit.paths == MODEL_FILES
    pushed = hub.files_at("me/mixin")
    assert json.loads(pushed["config.json"]) == config_data(model.config)
    reloaded = GFNet.from_pretrained("me/mixin")
    assert isinstance(reloaded, GFNet) and same_weights(reloaded, model)


def test_public_constructors_return_the_hub_aware_class(tmp_path):
    from gfnet_cli import create_model
    from gfnet_cli.models import GFNetArchitecture as Architecture

    built = create_model(TINY)
    assert isinstance(built, GFNet) and isinstance(built, Architecture)
    built.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert isinstance(loaded, GFNet) and hasattr(loaded, "push_to_hub")
    assert not hasattr(Architecture, "push_to_hub")  # the model library knows no Hub
