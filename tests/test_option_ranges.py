"""Every numeric option of every command has a checked range, in the library: an
out-of-range value exits 2 with one line naming the flag, before any MODEL or data is read
(the commands below name a MODEL and data that do not exist, so a late check would name
those instead)."""

from __future__ import annotations

import typing

import click
import pytest
import typer

from gfnet_cli.cli.main import app
from tests.conftest import assert_one_line_error

# What each command needs besides the option under test: MODELs, images and datasets that
# do not exist, so that reading any of them first would be an error about them instead.
REQUIRED = {
    "predict": ["missing.png", "--model", "no-such-model"],
    "embed": ["missing.png", "--model", "no-such-model", "--output", "out.safetensors"],
    "evaluate": ["--model", "no-such-model", "--dataset", "no-such-data"],
    "finetune": ["--model", "no-such-model", "--dataset", "no-such-data", "--output-dir", "out"],
    "profile": ["--model", "no-such-model"],
    "visualize": ["no-such-model"],
    "robustness": ["--model", "no-such-model", "--dataset", "no-such-data"],
    "export": ["no-such-model", "out.onnx"],
    "convert": ["no-such.pth", "out"],
    "download": ["no-such-model"],
    "push": ["no-such-folder", "someone/repo"],
    "models": [],
}


def _commands() -> dict[str, click.Command]:
    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}


def _kind(param: object) -> str | None:
    """``int`` or ``float`` for an option taking numbers (one, optional, or repeated)."""
    annotation = param.type_descriptor.annotation
    args = typing.get_args(annotation) or (annotation,)
    return next((kind.__name__ for kind in (float, int) if kind in args), None)


def _numeric_options() -> list[tuple[str, str, str]]:
    """(command, flag, kind) for every option whose values are numbers."""
    found = []
    for name, command in _commands().items():
        for param in command.params:
            flags = [opt for opt in param.opts if opt.startswith("--")]
            if param.param_type_name == "option" and flags and (kind := _kind(param)):
                found.append((name, flags[0], kind))
    return found


NUMERIC = _numeric_options()


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Nothing may be fetched: a dataset or MODEL name reached before the check fails here."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def test_every_command_is_walked():
    assert set(_commands()) == set(REQUIRED)
    assert len(NUMERIC) > 40  # the walk below really covers the numeric options


@pytest.mark.parametrize(
    ("command", "flag", "kind"), NUMERIC, ids=[f"{c} {f}" for c, f, _ in NUMERIC]
)
def test_a_negative_value_is_refused_naming_the_flag(run_cli, command, flag, kind):
    result = run_cli(command, *REQUIRED[command], flag, "-1")
    assert_one_line_error(result, 2, flag)


FLOATS = [(c, f) for c, f, kind in NUMERIC if kind == "float"]


@pytest.mark.parametrize(("command", "flag"), FLOATS, ids=[f"{c} {f}" for c, f in FLOATS])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_float_that_is_not_finite_is_refused(run_cli, command, flag, value):
    result = run_cli(command, *REQUIRED[command], flag, value)
    assert_one_line_error(result, 2, flag)


# The probe's findings: each of these exited 0, or started training and died with exit 1.
PROBE = [
    ("finetune", ["--min-lr", "-1"], "--min-lr"),
    ("finetune", ["--warmup-epochs", "-1"], "--warmup-epochs"),
    ("finetune", ["--hflip", "2"], "--hflip"),
    ("finetune", ["--clip-grad", "-1"], "--clip-grad"),
    ("finetune", ["--drop-path", "2"], "--drop-path"),
    ("finetune", ["--lr", "inf"], "--lr"),
    ("finetune", ["--resume", "--overwrite"], "--overwrite"),
    ("finetune", ["--depth", "100000", "--from-scratch"], "--depth"),
    ("finetune", ["--task", "segmentation", "--num-classes", "10000000"], "--num-classes"),
    ("profile", ["--memory-limit", "-5"], "--memory-limit"),
    ("profile", ["--resolution", "1000000000"], "--resolution"),
    ("profile", ["--warmup", "-1"], "--warmup"),
    ("profile", ["--plot", "figure.jpg"], "--plot"),
    ("predict", ["--img-size", "1000000"], "--img-size"),
    ("evaluate", ["--img-size", "1000000"], "--img-size"),
]


@pytest.mark.parametrize(("command", "args", "flag"), PROBE, ids=[" ".join(a) for _, a, _ in PROBE])
def test_the_probes_values_are_refused(run_cli, command, args, flag):
    assert_one_line_error(run_cli(command, *REQUIRED[command], *args), 2, flag)


def test_the_library_refuses_them_too(tmp_path):
    """Python users get the same checks: they live in the library, not in the CLI."""
    from gfnet_cli.commands.profile import ProfileOptions, profile
    from gfnet_cli.engine.train import TrainConfig, finetune
    from gfnet_cli.errors import UsageError

    config = TrainConfig(model="no-such-model", dataset="no-such-data",
                         output_dir=tmp_path / "out", hflip=2.0)  # fmt: skip
    with pytest.raises(UsageError, match="hflip") as caught:
        finetune(config)
    assert caught.value.param == "hflip" and not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="memory_limit_mb"):
        profile("no-such-model", options=ProfileOptions(memory_limit_mb=-5))
    with pytest.raises(UsageError, match="resolution"):
        profile("no-such-model", [10**9])
