"""Shared test helpers: the fixture folder, and running the CLI in-process."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"

# huggingface_hub and transformers fix their cache folders when first imported (the HF_HOME
# each test sets comes too late for them): one home for this session, not the user's
# ~/.cache/huggingface, where files another checkout's tests cached for the same loopback repo
# and commit (remote code included) would be read instead of this one's.
_SESSION_HF_HOME = tempfile.mkdtemp(prefix="gfnet-tests-hf-home-")
os.environ["HF_HOME"] = _SESSION_HF_HOME
os.environ["HF_MODULES_CACHE"] = os.path.join(_SESSION_HF_HOME, "modules")
os.environ.pop("HF_HUB_CACHE", None)
atexit.register(shutil.rmtree, _SESSION_HF_HOME, ignore_errors=True)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run ``gfnet ARGS...`` in this process; returns exit code, stdout and stderr."""
    from gfnet_cli.cli.main import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep every test away from the user's Hub cache and the network."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("GFNET_CACHE", raising=False)
    monkeypatch.delenv("GFNET_HUB_ORG", raising=False)  # zoo names: the authors' checkpoints
    monkeypatch.delenv("GFNET_ZOO_MIRROR", raising=False)
    torch.manual_seed(0)


def assert_one_line_error(result: CliResult, code: int = 2, contains: str | None = None) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("Error:")]
    assert len(error_lines) == 1, result.stderr
    if contains:
        assert contains.lower() in " ".join(result.stderr.split()).lower(), result.stderr
