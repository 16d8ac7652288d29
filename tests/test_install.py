"""The package as a user installs it: a wheel built from this tree, in a fresh environment.

The wheel is built without network (``--no-isolation``: the build backend of this
environment) and installed without its dependencies, which the fresh environment borrows
from this one through a ``.pth`` line, so nothing is downloaded and torch is not copied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".ruff_cache", "demo-output")  # fmt: skip


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    pytest.importorskip("build")
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
         tmp_path / "dist", source, cwd=tmp_path)  # fmt: skip
    wheel = next((tmp_path / "dist").glob("gfnet_cli-*-py3-none-any.whl"))

    # nothing of this checkout on the path: it would pass for the installed package
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
         "--quiet", wheel, cwd=tmp_path, env=env)  # fmt: skip
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=tmp_path).strip())  # fmt: skip
    # the dependencies (torch, datasets...) from this environment, after the venv's own
    (purelib / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = _run(python, "-c", "import gfnet_cli; print(gfnet_cli.__file__)", cwd=tmp_path,
                 env=env)  # fmt: skip
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel's copy, not this tree
    top = _run(venv / "bin" / "gfnet", "--help", cwd=tmp_path, env=env)
    assert "Usage: gfnet" in top and "models" in top and "finetune" in top
    models = _run(venv / "bin" / "gfnet", "models", cwd=tmp_path, env=env)
    assert "gfnet-xs" in models and "gfnet-h-b" in models
    requires = _run(python, "-c", "from importlib.metadata import requires; "
                    "print(requires('gfnet-cli'))", cwd=tmp_path, env=env)  # fmt: skip
    for dependency in ("torch", "safetensors", "typer", "huggingface-hub", "datasets"):
        assert dependency in requires
