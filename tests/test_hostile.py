"""Hostile input and races (docs/trust.md): what anyone's Hub repository, checkpoint or
concurrent process can throw at us is refused before it costs memory or time, and no two
processes ever race on one destination.

Every hostile file is refused in a fresh process that measures itself: the time of the
command (after imports) and the process's peak RSS, against the limits below.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gfnet_cli import GFNet
from gfnet_cli.hub.locks import writing
from gfnet_cli.hub.serialization import save_model
from gfnet_cli.models.config import GFNetConfig
from gfnet_cli.models.zoo import get_zoo_entry
from tests.conftest import assert_one_line_error
from tests.hub_server import FakeHub

ROOT = Path(__file__).resolve().parent.parent
MAX_SECONDS = 2.0
MAX_RSS_MB = 500

# Runs `gfnet ARGS` in-process after the imports, then reports its own exit code, the
# command's CPU seconds and the process's peak RSS as one JSON line on stdout. CPU time, not
# wall-clock: what a hostile file costs is the work done before it is refused, and CPU time
# does not grow when other processes share the machine (a wall-clock bound would be flaky).
_PROBE = """
import json, sys, time
import torch, gfnet_cli.cli.main, gfnet_cli.hub.resolve, gfnet_cli.hub.convert
from gfnet_cli.cli.main import main
started = time.process_time()
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
seconds = time.process_time() - started
# VmHWM: this process's own peak (getrusage's ru_maxrss survives exec, so a child forked
# from a large parent would report the parent's size)
with open("/proc/self/status") as status:
    rss_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
print(json.dumps({"code": code, "seconds": seconds, "rss_mb": rss_mb}))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("GFNET_ZOO_MIRROR", None) if "GFNET_ZOO_MIRROR" not in extra else None
    return env


def probe(*args: object, **env: str) -> tuple[dict, str]:
    """``gfnet ARGS`` in a fresh process: its measurements, and its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, args)],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def assert_refused_cheaply(measured: dict, stderr: str, contains: str) -> None:
    assert measured["code"] == 2, stderr
    assert "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if line.startswith("Error:")]) == 1, stderr
    assert contains.lower() in " ".join(stderr.split()).lower(), stderr
    assert measured["seconds"] <= MAX_SECONDS, measured
    assert measured["rss_mb"] <= MAX_RSS_MB, measured


def _tiny_config(**changes: object) -> dict:
    config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3)
    return {**config.to_dict(), **changes}


def _model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    save_model(GFNet(GFNetConfig(**_tiny_config())), folder)
    return folder


# ---------------------------------------------------------------------- 1. hostile configs
HOSTILE_CONFIGS = {
    "depth 100000": ({"depth": 100_000}, "depth must be in"),
    "depth 10**6": ({"depth": 10**6}, "depth must be in"),
    "depth 2.5": ({"depth": 2.5}, "depth must be an integer"),
    "mlp_ratio NaN": ({"mlp_ratio": float("nan")}, "mlp_ratio must be a finite number"),
    "mlp_ratio string": ({"mlp_ratio": "4"}, "mlp_ratio must be a number"),
    "integer class names": ({"class_names": [1, 2, 3]}, "class_names"),
    "format_version 99": ({"format_version": 99}, "format_version 99"),
    "embed_dim 10**9": ({"embed_dim": 10**9}, "embed_dim must be in"),
    "img_size 10**7": ({"img_size": 10**7}, "img_size must be in"),
    "num_classes 10**9": ({"num_classes": 10**9}, "num_classes must be in"),
    "patch_size true": ({"patch_size": True}, "patch_size must be an integer"),
    "five stages": ({"depth": [1, 1, 1, 1, 1]}, "depth has 5 values"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CONFIGS))
def test_a_hostile_config_is_refused_naming_its_field(case):
    changes, message = HOSTILE_CONFIGS[case]
    with pytest.raises(Exception, match=message.replace("*", r"\*")) as caught:
        GFNetConfig.from_dict(_tiny_config(**changes))
    assert getattr(caught.value, "exit_code", None) == 2


def test_a_hostile_hub_config_is_refused_before_its_weights(tmp_path):
    """The probe's repository: depth 100000 took 63 s and 3.8 GB before being refused."""
    folder = _model_folder(tmp_path)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["config.json"] = json.dumps(_tiny_config(depth=100_000)).encode()
    server = FakeHub().start()
    try:
        server.add_repo("someone/deep", files)
        measured, stderr = probe("download", "someone/deep", HF_ENDPOINT=server.url,
                                 HF_HOME=str(tmp_path / "hf"))  # fmt: skip
        fetched = [path for _, path in server.requests if "model.safetensors" in path]
    finally:
        server.stop()
    assert_refused_cheaply(measured, stderr, "depth must be in")
    assert not fetched  # the weights were never downloaded


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"depth": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        (json.dumps(_tiny_config(mlp_ratio=float("nan"))), "mlp_ratio"),
        (json.dumps(_tiny_config(depth=10**6, embed_dim=4096)), "depth"),
        (json.dumps({**_tiny_config(), "pad": "x" * (5 << 20)}), "at most"),
    ],
    ids=["nested", "nan", "deep", "huge file"],
)
def test_a_hostile_local_config_is_refused_cheaply(tmp_path, text, message):
    folder = _model_folder(tmp_path)
    (folder / "config.json").write_text(text)
    measured, stderr = probe("download", folder, HF_HOME=str(tmp_path / "hf"))
    assert_refused_cheaply(measured, stderr, message)


def test_an_expanded_tensor_in_a_checkpoint_is_refused_before_it_is_materialised(tmp_path):
    """100 KB of pickle that would become a 1.6 GB MODEL: a head of 100,000 x 4096 stored as
    one value (stride 0)."""
    state = GFNet(GFNetConfig(**_tiny_config(embed_dim=16))).state_dict()
    state["head.weight"] = torch.zeros(1, 1).expand(100_000, 16)
    state["pos_embed"] = torch.zeros(1, 1, 1).expand(1, 16, 16)
    state["head.bias"] = torch.zeros(1).expand(100_000)
    checkpoint = tmp_path / "hostile.pth"
    torch.save({"model": state}, checkpoint)
    assert checkpoint.stat().st_size < 200_000
    measured, stderr = probe("convert", checkpoint, tmp_path / "out", HF_HOME=str(tmp_path))
    assert_refused_cheaply(measured, stderr, "expanded or overlapping strides")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_an_image_size_beyond_the_bound_is_refused(run_cli, tmp_path, data_dir):
    folder = _model_folder(tmp_path)
    image = data_dir / "preprocess_input.png"
    result = run_cli("predict", image, "--model", folder, "--img-size", "1000000")
    assert_one_line_error(result, 2, "too large")


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


# ---------------------------------------------------------------------- 2. first-use races
def _authors_file(seed: int, path: Path) -> bytes:
    """A gfnet-ti-shaped checkpoint saved the way the authors' script saves one."""
    torch.manual_seed(seed)
    model = GFNet(get_zoo_entry("gfnet-ti").config(img_size=32, num_classes=4))
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    return path.read_bytes()


@pytest.fixture
def slow_mirror(tmp_path):
    """A loopback mirror of the authors' files that takes a second to answer: two first
    uses started together overlap."""
    server = FakeHub().start()
    answer = server._answer

    def slowly(handler, body):
        if handler.path.startswith("/mirror"):
            time.sleep(1.0)
        answer(handler, body)

    server._answer = slowly
    server.files["/mirror/a/gfnet-ti.pth"] = _authors_file(1, tmp_path / "a.pth")
    server.files["/mirror/b/gfnet-ti.pth"] = _authors_file(5, tmp_path / "b.pth")
    yield server
    server.stop()


def _gfnet(*args: object, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gfnet_cli", *map(str, args)],
                            env=_env(HF_HUB_DISABLE_PROGRESS_BARS="1", **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _both(*processes: subprocess.Popen) -> list[tuple[int, str, str]]:
    return [(p.wait(timeout=300), *p.communicate()) for p in processes]


@pytest.mark.slow
def test_two_first_uses_of_a_zoo_name_download_once_and_both_succeed(slow_mirror, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "GFNET_ZOO_MIRROR": f"{slow_mirror.url}/mirror/a"}
    results = _both(_gfnet("download", "gfnet-ti", **env), _gfnet("download", "gfnet-ti", **env))
    for code, _, err in results:
        assert code == 0, err
        assert "Traceback" not in err
    assert results[0][1] == results[1][1]  # the same folder
    downloads = [p for method, p in slow_mirror.requests if method == "GET" and "mirror" in p]
    assert len(downloads) == 1, downloads  # the second waited and reused the first's
    zoo = tmp_path / "hf" / "gfnet" / "zoo"
    assert sorted(p.name for p in zoo.iterdir()) == ["gfnet-ti", "gfnet-ti.source.json"]


@pytest.mark.slow
def test_first_uses_from_different_bytes_keep_the_record_true_to_the_cache(slow_mirror, tmp_path):
    """Two mirrors serving different files: whichever is converted is the one recorded."""
    home, mirror = str(tmp_path / "hf"), f"{slow_mirror.url}/mirror"
    results = _both(
        _gfnet("download", "gfnet-ti", HF_HOME=home, GFNET_ZOO_MIRROR=f"{mirror}/a"),
        _gfnet("download", "gfnet-ti", HF_HOME=home, GFNET_ZOO_MIRROR=f"{mirror}/b"),
    )
    assert [code for code, _, _ in results] == [0, 0], results
    record = json.loads((tmp_path / "hf/gfnet/zoo/gfnet-ti.source.json").read_text())
    converted = load_file(str(tmp_path / "hf/gfnet/zoo/gfnet-ti/model.safetensors"))
    for name in ("a", "b"):
        body = slow_mirror.files[f"/mirror/{name}/gfnet-ti.pth"]
        if hashlib.sha256(body).hexdigest() == record["sha256"]:
            expected = torch.load(tmp_path / f"{name}.pth", weights_only=True)["model"]
            break
    else:
        pytest.fail(f"the record pins neither file: {record}")
    assert all(torch.equal(converted[k], expected[k].float()) for k in converted)


# ---------------------------------------------------------------------- 3. convert races
def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pth"
    torch.save({"model": GFNet(GFNetConfig(**_tiny_config())).state_dict()}, path)
    return path


@pytest.mark.slow
def test_two_converts_into_one_new_folder_one_wins_the_other_exits_2(slow_mirror, tmp_path):
    """Both download from the slow mirror, so both reach the write at about the same time."""
    source, out = f"{slow_mirror.url}/mirror/a/gfnet-ti.pth", tmp_path / "out"
    results = _both(_gfnet("convert", source, out, HF_HOME=str(tmp_path / "hf")),
                    _gfnet("convert", source, out, HF_HOME=str(tmp_path / "hf")))  # fmt: skip
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    assert "Traceback" not in loser and ("already exists" in loser or "another process" in loser)
    names = {p.name for p in out.iterdir()}  # the winner's whole folder, nothing half-written
    assert {"README.md", "config.json", "model.safetensors"} <= names, names
    assert not [name for name in names if name.startswith(".") or "partial" in name], names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth", "b.pth", "hf", "out"]


def test_a_convert_into_a_folder_being_written_is_refused_naming_the_writer(run_cli, tmp_path):
    source, out = _checkpoint(tmp_path), tmp_path / "out"
    with writing(out, param="output_dir"):
        result = _both(_gfnet("convert", source, out))[0]
    assert result[0] == 2, result
    assert f"pid {os.getpid()} on {socket.gethostname()}" in result[2]
    assert not out.exists()


# ---------------------------------------------------------------------- 8. stale partials
_KILLED_WRITER = """
import os, signal, sys
from gfnet_cli.hub.serialization import atomic_directory
with atomic_directory(sys.argv[1]) as staging:
    (staging / "config.json").write_text("{}")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_converts_partial_folder_is_removed_by_the_next_convert(run_cli, tmp_path):
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(out)], env=_env())
    assert killed.returncode == -9
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out."))
    assert any(name.endswith(".partial") for name in left), left
    assert run_cli("convert", _checkpoint(tmp_path), out).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.pth"]


# ---------------------------------------------------------------------- 7. a full disk
@pytest.fixture
def full_disk(tmp_path):
    """A small tmpfs filled to the last block: every write into it fails with ENOSPC."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` up, then free ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))


def test_export_to_a_full_disk_is_one_line_and_leaves_nothing(run_cli, tmp_path, full_disk):
    """It aborted with exit 134 and a C++ stack trace."""
    folder = _model_folder(tmp_path)
    fill(full_disk)
    result = run_cli("export", folder, full_disk / "model.pt2")
    assert_one_line_error(result, 1, "disk is full")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


class _FillDiskInSecondEpoch:
    """Fills the output disk during the first step of the second epoch, once the first
    epoch's checkpoint is written."""

    def __init__(self, disk: Path) -> None:
        self.disk = disk

    def __getattr__(self, name):  # the other callbacks do nothing
        return lambda *args, **kwargs: None

    def on_step(self, step, *args) -> None:
        if step == 3:  # two steps an epoch
            fill(self.disk, leave=2048)  # room for a metrics line, not for a checkpoint


def test_finetune_on_a_full_disk_says_so_and_keeps_its_checkpoints(full_disk, tmp_path):
    """It said only 'RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos'."""
    from gfnet_cli.engine import checkpoint as ckpt
    from gfnet_cli.engine.train import TrainConfig, finetune
    from gfnet_cli.errors import GFNetError

    data = tmp_path / "data"
    for index, name in enumerate(["a", "b"]):
        for split in ("train", "test"):
            (data / split / name).mkdir(parents=True)
            for i in range(4):
                pixels = torch.full((16, 16, 3), 60 * index + i, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(data / split / name / f"{i}.png")
    out = full_disk / "run"
    config = TrainConfig(model="gfnet-ti", dataset=str(data), output_dir=out, from_scratch=True,
                         patch_size=8, embed_dim=16, depth=1, img_size=16, epochs=3,
                         batch_size=4, num_workers=0, checkpoint_every=0)  # fmt: skip
    with pytest.raises(GFNetError, match="disk is full") as caught:
        finetune(config, _FillDiskInSecondEpoch(full_disk))
    assert caught.value.exit_code == 1 and "\n" not in str(caught.value)
    assert "checkpoint" in str(caught.value) and "intact" in str(caught.value)
    saved = ckpt.list_checkpoints(out / "checkpoints")
    assert [p.name for p in saved] == ["step-000000002.pt"]
    assert ckpt.load_checkpoint(saved[0])["global_step"] == 2
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_killed_exports_leftovers_go_on_the_next_export_to_that_file(run_cli, tmp_path):
    folder, out = _model_folder(tmp_path), tmp_path / "exports"
    out.mkdir()
    # what `kill -9` during an export leaves: its partial file and its unlocked lock file
    (out / ".model.pt2.x8k2jq.partial.pt2").write_bytes(b"half a program")
    (out / ".model.pt2.lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))
    (out / ".other.pt2.x8k2jq.partial.pt2").write_bytes(b"another destination's")
    result = run_cli("export", folder, out / "model.pt2")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [".other.pt2.x8k2jq.partial.pt2", "model.pt2"]


def _safetensors(header: dict | bytes, data: bytes = b"", claimed: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (claimed if claimed is not None else len(text)).to_bytes(8, "little") + text + data


HOSTILE_WEIGHTS = {
    "header longer than the file": _safetensors({}, claimed=10**15),
    "offsets beyond the file": _safetensors(
        {"x": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}
    ),
    "shape that disagrees with its bytes": _safetensors(
        {"x": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4]}}, b"\0" * 4
    ),
    "nested header": _safetensors(b"[" * 100_000 + b"]" * 100_000),
    "not JSON": _safetensors(b"\xff" * 64),
}


@pytest.mark.parametrize("case", list(HOSTILE_WEIGHTS))
def test_hostile_weights_are_refused_from_their_header(tmp_path, case):
    folder = _model_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(HOSTILE_WEIGHTS[case])
    measured, stderr = probe("download", folder, HF_HOME=str(tmp_path / "hf"))
    assert_refused_cheaply(measured, stderr, "truncated or corrupt")
