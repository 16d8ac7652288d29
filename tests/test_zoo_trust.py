"""Zoo names trust only sources the project controls (docs/trust.md), against a stand-in Hub
and mirror on loopback: a decoy ``gfnet/<name>`` repository is ignored unless the user names
the organization, the mirror's checkpoint is what a zoo name gives, and a mirror file that
changes after its first use is refused (trust on first use)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from gfnet_cli import GFNet, load_model
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models.zoo import ZOO, get_zoo_entry
from tests.conftest import assert_one_line_error
from tests.hub_server import FakeHub


def _zoo_shaped(seed: int) -> GFNet:
    """A gfnet-ti-shaped model (small image, few classes): the decoy and the authors' alike."""
    torch.manual_seed(seed)
    return GFNet(get_zoo_entry("gfnet-ti").config(img_size=32, num_classes=4)).eval()


def _authors_file(model: GFNet, path: Path) -> bytes:
    """A checkpoint saved the way the authors' training script saves one."""
    args = argparse.Namespace(model="gfnet-ti", lr=1e-3, input_size=224)
    torch.save({"model": model.state_dict(), "epoch": 1, "args": args}, path)
    return path.read_bytes()


def _repo_files(model: GFNet, folder: Path) -> dict[str, bytes]:
    save_model(model, folder, card="---\nlicense: mit\n---\n# not the authors' model\n")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _same(a: GFNet, b: GFNet) -> bool:
    one, two = a.state_dict(), b.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """A loopback Hub holding a decoy ``gfnet/gfnet-ti``, and a mirror of the authors' file."""
    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("GFNET_ZOO_MIRROR", f"{server.url}/mirror")
    authors, decoy = _zoo_shaped(1), _zoo_shaped(2)
    body = _authors_file(authors, tmp_path / "authors.pth")
    server.files["/mirror/gfnet-ti.pth"] = body
    commit = server.add_repo("gfnet/gfnet-ti", _repo_files(decoy, tmp_path / "decoy"))
    yield argparse.Namespace(
        server=server, authors=authors, decoy=decoy, body=body, commit=commit, tmp=tmp_path
    )
    server.stop()


def _cache() -> Path:
    return Path(os.environ["HF_HOME"]) / "gfnet" / "zoo"


def _hub_requests(server: FakeHub) -> list[str]:
    return [path for _, path in server.requests if not path.startswith("/mirror/")]


def test_decoy_repository_is_ignored_by_default(stand_in, run_cli):
    result = run_cli("download", "gfnet-ti", "--json")
    assert result.exit_code == 0, result.stderr
    answer = result.json()
    assert answer["source"]["kind"] == "mirror"
    assert answer["source"]["location"] == f"{stand_in.server.url}/mirror/gfnet-ti.pth"
    assert answer["source"]["sha256"] == hashlib.sha256(stand_in.body).hexdigest()
    assert answer["path"] == str(_cache() / "gfnet-ti")
    assert _same(load_model("gfnet-ti"), stand_in.authors)
    assert _hub_requests(stand_in.server) == []  # the Hub was never asked
    record = json.loads((_cache() / "gfnet-ti.source.json").read_text())
    assert record["sha256"] == answer["source"]["sha256"]
    assert record["size"] == len(stand_in.body)
    card = (_cache() / "gfnet-ti" / "README.md").read_text()
    assert answer["source"]["sha256"] in card

    plain = run_cli("download", "gfnet-ti")
    assert plain.stdout.strip().splitlines()[-1] == answer["path"]
    assert f"sha256 {answer['source']['sha256']}" in " ".join(plain.stderr.split())


def test_decoy_repository_is_used_only_when_its_organization_is_named(
    stand_in, run_cli, monkeypatch
):
    monkeypatch.setenv("GFNET_HUB_ORG", "gfnet")
    assert _same(load_model("gfnet-ti"), stand_in.decoy)
    rows = {row["name"]: row for row in run_cli("models", "--json").json()}
    assert rows["gfnet-ti"]["source"]["kind"] == "hub"
    assert rows["gfnet-ti"]["source"]["location"] == "gfnet/gfnet-ti"
    result = run_cli("download", "gfnet-ti")
    assert "models--gfnet--gfnet-ti" in result.stdout
    assert "Hub repository gfnet/gfnet-ti" in result.stderr
    assert not (_cache() / "gfnet-ti.source.json").exists()  # nothing of the authors' pinned


def test_models_json_says_where_every_zoo_model_comes_from(run_cli, monkeypatch):
    rows = run_cli("models", "--json").json()
    assert [row["name"] for row in rows] == list(ZOO)
    for row in rows:
        assert row["source"]["kind"] == "authors"
        assert row["source"]["location"] == ZOO[row["name"]].url
        assert row["source"]["sha256"] is None and row["source"]["cached"] is None
    monkeypatch.setenv("GFNET_ZOO_MIRROR", "https://mirror.example/gfnet/")
    row = run_cli("models", "--json").json()[0]
    assert row["source"]["kind"] == "mirror"
    assert row["source"]["location"] == "https://mirror.example/gfnet/gfnet-ti.pth"


def test_a_changed_mirror_file_is_refused_after_first_use(stand_in, run_cli, tmp_path):
    assert run_cli("download", "gfnet-ti").exit_code == 0
    first = hashlib.sha256(stand_in.body).hexdigest()
    changed = _authors_file(_zoo_shaped(5), tmp_path / "changed.pth")
    stand_in.server.files["/mirror/gfnet-ti.pth"] = changed
    second = hashlib.sha256(changed).hexdigest()

    result = run_cli("download", "gfnet-ti", "--force-download")
    assert_one_line_error(result, 2, first)
    assert second in result.stderr
    assert _same(load_model("gfnet-ti"), stand_in.authors)  # the converted model is kept
    assert not any((_cache().parent / "downloads").iterdir())  # nor is the changed file

    # Deleting only the folder re-downloads, and the record still refuses the new file.
    shutil.rmtree(_cache() / "gfnet-ti")
    assert_one_line_error(run_cli("download", "gfnet-ti"), 2, second)
    assert not (_cache() / "gfnet-ti").exists()
    # `gfnet convert gfnet-ti` reads the same link and checks the same record.
    assert_one_line_error(run_cli("convert", "gfnet-ti", tmp_path / "out"), 2, second)
    assert not (tmp_path / "out").exists()

    # Clearing the cache entry, as the error says, accepts the new file and pins it.
    (_cache() / "gfnet-ti.source.json").unlink()
    result = run_cli("download", "gfnet-ti", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["source"]["sha256"] == second
    assert _same(load_model("gfnet-ti"), _zoo_shaped(5))


def test_an_unreadable_record_is_a_one_line_error(stand_in, run_cli):
    _cache().mkdir(parents=True)
    (_cache() / "gfnet-ti.source.json").write_text("{not json")
    assert_one_line_error(run_cli("download", "gfnet-ti"), 2, "gfnet-ti.source.json")
    assert not (_cache() / "gfnet-ti").exists()


def test_a_commit_the_package_ships_is_used_and_cannot_be_moved(stand_in, monkeypatch):
    entry = dataclasses.replace(ZOO["gfnet-ti"], hub_revision=stand_in.commit)
    monkeypatch.setitem(ZOO, "gfnet-ti", entry)
    # Whoever holds the namespace pushes other weights to main: the pinned commit stands.
    stand_in.server.add_repo("gfnet/gfnet-ti", _repo_files(_zoo_shaped(9), stand_in.tmp / "new"))
    assert _same(load_model("gfnet-ti"), stand_in.decoy)
    assert all(
        f"/resolve/{stand_in.commit}/" in path
        for path in _hub_requests(stand_in.server)
        if "/resolve/" in path
    )
    assert not (_cache() / "gfnet-ti.source.json").exists()


def test_a_zoo_revision_needs_a_named_organization(stand_in, run_cli, monkeypatch):
    assert_one_line_error(run_cli("download", "gfnet-ti@v1"), 2, "GFNET_HUB_ORG")
    assert_one_line_error(run_cli("profile", "--model", "gfnet-ti@v1"), 2, "GFNET_HUB_ORG")
    assert _hub_requests(stand_in.server) == []
    monkeypatch.setenv("GFNET_HUB_ORG", "gfnet")
    stand_in.server.add_repo(
        "gfnet/gfnet-ti", _repo_files(_zoo_shaped(3), stand_in.tmp / "v1"), revision="v1"
    )
    assert _same(load_model("gfnet-ti@v1"), _zoo_shaped(3))
