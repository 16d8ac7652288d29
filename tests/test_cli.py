"""The command line itself: instant help, one declaration per shared option, flag names in
library errors, progress on stderr."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import typer
from rich.console import Console

from gfnet_cli.cli import options
from gfnet_cli.cli.main import app, flag_for, with_flags
from gfnet_cli.cli.progress import ProgressBar, progress_bar
from tests.conftest import assert_one_line_error

HEAVY = ("torch", "datasets", "huggingface_hub")

# Every flag the CLI had when the shared options were declared once: a flag, its short
# options and its default never change or disappear (docs/cli.md). `!`: required.
CONTRACT = {
    "convert": "SOURCE! OUT_DIR! --arch --use-ema --labels --overwrite --json",
    "download": "MODEL! --revision --force-download --json",
    "evaluate": "--model/-m! --dataset/-d! --dataset-config --split --batch-size/-b=64 "
    "--max-samples --img-size --num-workers --device=auto --precision=fp32 --image-column "
    "--label-column --streaming --label-order=auto --json --output/-o",
    "finetune": "--model/-m! --dataset/-d! --output-dir! --from-scratch --patch-size "
    "--embed-dim --depth --img-size --crop-pct --epochs=10 --max-steps --batch-size=32 "
    "--lr=0.0001 --min-lr=1e-06 --weight-decay=0.0001 --decay-all --warmup-epochs=1.0 "
    "--label-smoothing=0.1 --drop-path --clip-grad=1.0 --no-augment --crop-scale=0.6,1.0 "
    "--hflip=0.5 --mixup=0.0 --cutmix=0.0 --mix-prob=1.0 --mix-switch-prob=0.5 --seed=0 "
    "--precision=fp32 --device=auto --num-workers=2 --checkpoint-every=500 --resume "
    "--overwrite --push-to --train-split --eval-split --dataset-config --image-column "
    "--label-column --log-every=10 --streaming --shuffle-buffer=1000 --json",
    "export": "MODEL! OUT! --format --img-size --dynamic-batch --batch-size --opset --fft=auto "
    "--overwrite --json",
    "models": "--json",
    "predict": "IMAGE! --model/-m=gfnet-xs --top-k/-k=5 --img-size --batch-size/-b=32 "
    "--device=auto --precision=fp32 --json",
    "profile": "--model/-m=gfnet-xs --resolution/-r --batch-size/-b=1 --device=auto "
    "--precision=fp32 --compare --json --plot --warmup=2 --repeats=10 --compile --no-memory "
    "--memory-limit --revision",
    "push": "DIRECTORY! REPO_ID! --private --revision --commit-message --dry-run --json",
}


def _commands() -> dict:
    group = typer.main.get_command(app)
    ctx = typer.Context(group)
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


# ---------------------------------------------------------------------------------- help
_HELP_PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from gfnet_cli.cli.main import main

    HEAVY = {heavy!r}
    report = []
    for args in {invocations!r}:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(args)
                code = 0
            except SystemExit as exc:
                code = exc.code
        loaded = [name for name in HEAVY if name in sys.modules]
        report.append({{"args": args, "code": code, "help": out.getvalue(), "loaded": loaded}})
    print(json.dumps(report))
    """
)


def test_help_lists_options_and_loads_no_heavy_library():
    # `gfnet`, `gfnet --help` and every `gfnet CMD --help` in a fresh interpreter: the help
    # is complete, and torch, datasets and huggingface_hub stay unloaded (instant start-up).
    commands = _commands()
    invocations = [[], ["--help"]] + [[name, "--help"] for name in commands]
    code = _HELP_PROBE.format(heavy=HEAVY, invocations=invocations)
    env = os.environ | {"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = {" ".join(run["args"]): run for run in json.loads(done.stdout)}

    for args, run in report.items():
        assert run["loaded"] == [], f"`gfnet {args}` imported {run['loaded']}"
    assert report[""]["code"] == 2  # plain `gfnet`: the help, with the usage-error status
    for top in ("", "--help"):
        assert all(name in report[top]["help"] for name in commands), report[top]["help"]
        assert "--version" in report[top]["help"] and "--quiet" in report[top]["help"]
    for name, command in commands.items():
        run = report[f"{name} --help"]
        assert run["code"] == 0, run
        assert f"gfnet {name}" in run["help"]
        for param in command.params:
            for flag in param.opts if param.param_type_name == "option" else ():
                assert flag in run["help"], f"{flag} missing from `gfnet {name} --help`"
            if param.help:
                assert param.help.split()[0] in run["help"]
    predict_help = report["predict --help"]["help"]
    assert "[default: gfnet-xs]" in predict_help and "IMAGE" in predict_help


def test_every_commands_help_reads_like_gits():
    # A synopsis, grouped options with help on every one, values named for what they hold,
    # flags without a placeholder: no `<bool>`, `<list[str]>`, `{IMAGE}` or bare options.
    from gfnet_cli.cli.help import GROUPED_FROM

    commands = _commands()
    invocations = [[name, "--help"] for name in commands]
    env = os.environ | {"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE.format(heavy=HEAVY, invocations=invocations)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    helps = {run["args"][0]: run["help"] for run in json.loads(done.stdout)}
    placeholders: dict[str, set[str]] = {}
    for name, command in commands.items():
        text = helps[name]
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert "{" not in usage and f"gfnet {name} [OPTIONS]" in usage, usage
        assert not re.search(r"<(bool|int|float|str|path|list\[)", text), (name, text)
        options = [p for p in command.params if p.param_type_name == "option"]
        for param in command.params:
            what = f"gfnet {name}: {param.opts or param.name}"
            assert (param.help or "").strip(), f"{what} has no help"
            if param.param_type_name == "argument":
                assert param.metavar == param.metavar.upper(), (name, param.metavar)
                assert param.metavar in usage, usage
                continue
            placeholders.setdefault(param.opts[0], set()).add(param.metavar)
            if param.is_flag:
                assert param.metavar == "", (name, param.opts)
        panels = text.count("╭─")
        assert panels >= (3 if len(options) > GROUPED_FROM else 1), (name, panels)
    assert placeholders["--plot"] == {"FILE"} and placeholders["--json"] == {""}
    assert placeholders["--batch-size"] == {"N"}


def test_bool_flags_take_no_value():
    from click.testing import CliRunner

    result = CliRunner().invoke(typer.main.get_command(app), ["models", "--json", "true"])
    assert result.exit_code == 2  # `--json true`: "true" is no argument of `models`


def test_debug_after_the_subcommand_is_the_global_flag(run_cli, monkeypatch):
    from gfnet_cli.cli.main import global_flags_first

    assert global_flags_first(["predict", "x.jpg", "--debug"]) == ["--debug", "predict", "x.jpg"]
    assert global_flags_first(["push", "d", "o/r", "--", "--debug"]) == [
        "push", "d", "o/r", "--", "--debug"]  # fmt: skip
    result = run_cli("models", "--json", "--debug")
    assert result.exit_code == 0, result.stderr
    assert "No such option" not in result.stderr


# ------------------------------------------------------------------------------- options
def _declared(command) -> dict[str, tuple[list[str], bool, str]]:
    declared = {}
    for param in command.params:
        if param.param_type_name == "argument":
            declared[param.metavar or param.name.upper()] = ([], param.required, "")
            continue
        default = "" if param.default is None or param.default is False else str(param.default)
        if isinstance(param.default, (list, tuple)):
            default = ",".join(map(str, param.default))
        declared[param.opts[0]] = (param.opts[1:], param.required, default)
    return declared


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_flags_short_options_and_defaults_are_kept(name):
    declared = _declared(_commands()[name])
    for item in CONTRACT[name].split():
        spec, _, default = item.partition("=")
        required = spec.endswith("!")
        flag, *short = spec.rstrip("!").split("/")
        assert flag in declared, f"gfnet {name}: {flag} disappeared"
        assert declared[flag] == (short, required, default), (name, flag, declared[flag])


@pytest.mark.parametrize(
    ("param", "flag"),
    [
        ("model", "--model"),
        ("dataset", "--dataset"),
        ("device", "--device"),
        ("precision", "--precision"),
        ("as_json", "--json"),
        ("batch_size", "--batch-size"),
        ("img_size", "--img-size"),
        ("num_workers", "--num-workers"),
        ("streaming", "--streaming"),
        ("dataset_config", "--dataset-config"),
        ("image_column", "--image-column"),
        ("label_column", "--label-column"),
    ],
)
def test_a_shared_option_reads_the_same_in_every_command(param, flag):
    helps = {}
    for name, command in _commands().items():
        for p in command.params:
            if p.name == param and p.param_type_name == "option":
                if name == "finetune" and param == "batch_size":
                    continue  # per process and step under torchrun, and no -b: its own option
                helps[name] = (tuple(p.opts), p.help)
    assert len(helps) >= 1
    assert len(set(helps.values())) == 1, helps
    assert next(iter(helps.values()))[0][0] == flag


def test_finetune_options_are_trainconfigs_fields_with_its_defaults():
    # finetune_cmd.py declares its options by hand (importing TrainConfig would load torch
    # for --help); every field must have its option, with the library's default.
    import dataclasses

    from gfnet_cli.cli.finetune_cmd import _NOT_CONFIG, RECIPE_NAMES
    from gfnet_cli.engine.train import RECIPES, TrainConfig

    command = _commands()["finetune"]
    renamed = {"no_augment": "augment", "compile_model": "compile"}
    cli = {renamed.get(p.name, p.name): p for p in command.params if p.name != "help"}
    cli_fields = set(cli) - (_NOT_CONFIG - {"recipe", "lr_base_batch"}) | {"augment", "compile"}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(fields) == cli_fields, (set(fields) ^ cli_fields)
    cli_default = {"augment": True, "crop_scale": tuple(
        float(v) for v in cli["crop_scale"].default.split(","))}  # fmt: skip
    for name, field in fields.items():
        if field.default is dataclasses.MISSING:
            assert cli[name].required, name
            continue
        default = cli_default.get(name, cli[name].default)
        flag = "--" + name.replace("_", "-")
        assert default == field.default, f"{flag}: {default!r} != {field.default!r}"
    assert set(RECIPE_NAMES) == set(RECIPES)


def test_cli_constants_match_the_library():
    # options.py holds torch-free copies so that --help needs no torch; they must agree.
    from gfnet_cli.commands.predict import DEFAULT_MODEL
    from gfnet_cli.commands.profile import BASELINES
    from gfnet_cli.data.augment import DEFAULT_CROP_SCALE
    from gfnet_cli.data.streaming import DEFAULT_SHUFFLE_BUFFER
    from gfnet_cli.engine.train.config import DEFAULT_PREPARE_TIMEOUT

    assert options.DEFAULT_MODEL == DEFAULT_MODEL
    assert options.BASELINES == BASELINES
    assert options.DEFAULT_CROP_SCALE == DEFAULT_CROP_SCALE
    assert options.DEFAULT_SHUFFLE_BUFFER == DEFAULT_SHUFFLE_BUFFER
    assert options.DEFAULT_PREPARE_TIMEOUT == DEFAULT_PREPARE_TIMEOUT


# ----------------------------------------------------------------- errors name the flag
def test_library_error_names_the_flag_through_a_real_command(run_cli):
    # resolve_device raises UsageError("unknown device 'tpu' ...", param="device").
    result = run_cli("predict", "x.png", "--device", "tpu")
    assert_one_line_error(result, 2, "unknown --device 'tpu'")
    result = run_cli("predict", "x.png", "--device", "cpu", "--precision", "fp16")
    assert_one_line_error(result, 2, "--precision fp16 needs a GPU")


def test_parameter_names_become_the_commands_flags():
    commands = _commands()
    predict, profile = commands["predict"], commands["profile"]
    assert flag_for("batch_size", predict) == "--batch-size"
    assert flag_for("as_json", predict) == "--json"
    assert flag_for("compile", profile) == "--compile"  # by spelling: the name is compile_model
    assert flag_for("max_samples", predict) is None
    assert flag_for("batch_size", None) is None

    rewrite = with_flags("batch_size must be at least 1, got 0", ("batch_size",), predict)
    assert rewrite == "--batch-size must be at least 1, got 0"
    # Whole words only; a flag already written, or a longer word, is left alone.
    assert with_flags("--batch-size too big", ("batch_size",), predict) == "--batch-size too big"
    assert with_flags("device-side assert", ("device",), predict) == "device-side assert"
    assert with_flags("devices: none", ("device",), predict) == "devices: none"
    assert with_flags("no such max_samples", ("max_samples",), predict) == "no such max_samples"
    assert with_flags("batch_size", (), predict) == "batch_size"


# ------------------------------------------------------------------------------ progress
def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=100), buffer


def test_progress_bar_draws_only_once_work_reports():
    console, buffer = _console()
    with ProgressBar("evaluating", "images", console=console) as bar:
        assert buffer.getvalue() == ""  # nothing drawn for work that never reports
        bar(0, 4)
        bar(4, 4)
    assert "evaluating" in buffer.getvalue() and "4/4" in buffer.getvalue()

    console, buffer = _console()
    with ProgressBar("streaming", console=console) as bar:
        bar(3, None)  # unknown total
    assert "streaming" in buffer.getvalue()


def test_progress_bar_disabled_is_none():
    with progress_bar("x", enabled=False) as bar:
        assert bar is None


@pytest.mark.parametrize(("quiet", "expect_bar"), [((), True), (("-q",), False)])
def test_evaluate_passes_a_progress_callback_unless_quiet(run_cli, monkeypatch, quiet, expect_bar):
    seen = {}

    def fake_evaluate(model, dataset, **kwargs):
        progress = kwargs["progress"]
        seen["progress"] = progress
        if progress:
            progress(1, 2)
            progress(2, 2)
        return SimpleNamespace(summary=lambda: {"model": model, "dataset": dataset})

    monkeypatch.setattr("gfnet_cli.commands.evaluate.evaluate", fake_evaluate)
    result = run_cli(*quiet, "evaluate", "-m", "tiny", "-d", "data", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"model": "tiny", "dataset": "data"}  # stdout: JSON only
    assert isinstance(seen["progress"], ProgressBar) is expect_bar
    assert seen["progress"] is not None or not expect_bar


def test_every_parameter_an_error_names_becomes_a_flag():
    finetune = _commands()["finetune"]
    message = with_flags(
        "output_dir runs/x is not empty: pass resume to continue its run, overwrite to start over",
        ("output_dir", "resume", "overwrite"),
        finetune,
    )
    assert message == (
        "--output-dir runs/x is not empty: pass --resume to continue its run, --overwrite to "
        "start over"
    )


def test_log_lines_are_one_line_each_at_80_columns(capsys):
    import logging

    from gfnet_cli.cli._common import setup_logging, stderr

    setup_logging()
    assert stderr.width <= 80  # not a terminal: the narrow default a user may have
    long = "resuming from step-000000042.pt " + "with a long path/" * 10
    logging.getLogger("gfnet_cli.engine").info("%s (step %d)", long, 42)
    logging.getLogger("gfnet_cli.engine").warning("a [bold]warning[/bold]\nover two lines")
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"info: {long.strip()} (step 42)",
                     "warning: a [bold]warning[/bold] over two lines"]  # fmt: skip
