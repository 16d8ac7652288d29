"""``gfnet robustness``: clean, adversarial and corrupted accuracy, like the paper's Table 3."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from gfnet_cli.cli._common import State, emit_json, stderr, stdout
from gfnet_cli.cli.options import (
    BatchSizeOption,
    DatasetConfigOption,
    DatasetOption,
    DeviceOption,
    ImageColumnOption,
    ImgSizeOption,
    JsonOption,
    LabelColumnOption,
    ModelOption,
    NumWorkersOption,
    PrecisionOption,
)
from gfnet_cli.cli.progress import progress_bar
from gfnet_cli.errors import UsageError

if TYPE_CHECKING:
    from gfnet_cli.analysis.robustness import RobustnessResult

# Defaults shown in --help; the library's copies: gfnet_cli.analysis.attacks
DEFAULT_ATTACKS = "fgsm,pgd"
DEFAULT_EPSILON = "1/255"
DEFAULT_PGD_STEPS = 5
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+)\s*)?$")


def parse_pixels(text: str, flag: str) -> float:
    """``0.5``, ``1/255`` or ``0.5/255``: a value in pixel units (a fraction of the range)."""
    match = _NUMBER.match(str(text))
    if match is None:
        if str(text).strip().startswith("-"):
            raise UsageError(f"{flag} must be in [0, 1], got {text}")
        raise UsageError(f"{flag} takes a number or a fraction like 1/255, got {text!r}")
    value = float(match[1])
    if match[2] is not None:
        if float(match[2]) == 0:
            raise UsageError(f"{flag}: division by zero in {text!r}")
        value /= float(match[2])
    return value


def robustness_command(
    model: ModelOption,
    dataset: DatasetOption,
    dataset_config: DatasetConfigOption = None,
    split: str = typer.Option(None, "--split", help="Split (default: validation, then test)."),
    attacks: str = typer.Option(
        DEFAULT_ATTACKS, "--attack", help="Attacks, comma-separated: fgsm, pgd, or none."
    ),
    epsilons: list[str] = typer.Option(
        [DEFAULT_EPSILON],
        "--epsilon",
        "-e",
        help="L-inf budget in pixel units, e.g. 1/255 or 0.004 (repeat for a curve).",
    ),
    pgd_steps: int = typer.Option(DEFAULT_PGD_STEPS, "--pgd-steps", help="PGD iterations."),
    pgd_step_size: str = typer.Option(
        None, "--pgd-step-size", help="PGD step in pixel units (default: half of each epsilon)."
    ),
    pgd_random_start: bool = typer.Option(
        False, "--pgd-random-start", help="Start PGD at a random point of the epsilon-ball."
    ),
    corruptions: str = typer.Option(
        None,
        "--corruptions",
        help="ImageNet-C corruptions: all, noise, blur, weather, digital, or names (a,b).",
    ),
    severities: list[int] = typer.Option(
        None, "--severity", help="Corruption severity 1-5 (repeatable; default: all five)."
    ),
    max_samples: int = typer.Option(
        None, "--max-samples", help="Use this many evenly spaced samples of the split."
    ),
    batch_size: BatchSizeOption = 32,
    img_size: ImgSizeOption = None,
    num_workers: NumWorkersOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    image_column: ImageColumnOption = None,
    label_column: LabelColumnOption = None,
    label_order: str = typer.Option(
        "auto",
        "--label-order",
        help="auto: match class names to the model's; index: take label ids as class indices.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the corruptions' (and PGD's) draws."),
    frost_textures: Path = typer.Option(
        None, "--frost-textures", help="Folder of the original ImageNet-C frost images."
    ),
    as_json: JsonOption = False,
    output: Path = typer.Option(
        None, "--output", "-o", help="Also write the full result (per-class figures) as JSON."
    ),
    plot: Path = typer.Option(
        None, "--plot", help="Draw accuracy vs epsilon and error vs severity (PNG)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
) -> None:
    """Measure MODEL on DATASET: clean, FGSM, PGD and corrupted top-1.

    Attacks perturb the [0, 1] pixels of the model's evaluation transform
    (default: epsilon 1/255, PGD 5 steps of half epsilon). Corruptions are
    ImageNet-C's 15 types, made on the fly. See docs/analysis.md.
    """
    from gfnet_cli.analysis.robustness import robustness

    budgets = [parse_pixels(e, "--epsilon") for e in epsilons or [DEFAULT_EPSILON]]
    step = None if pgd_step_size is None else parse_pixels(pgd_step_size, "--pgd-step-size")
    with progress_bar("robustness", "images", enabled=not State.quiet) as progress:
        result = robustness(
            model,
            dataset,
            split=split,
            dataset_config=dataset_config,
            attacks=attacks,
            epsilons=budgets,
            pgd_steps=pgd_steps,
            pgd_step_size=step,
            pgd_random_start=pgd_random_start,
            corruptions=corruptions,
            severities=severities or (1, 2, 3, 4, 5),
            max_samples=max_samples,
            batch_size=batch_size,
            img_size=img_size,
            num_workers=num_workers,
            device=device,
            precision=precision,
            image_column=image_column,
            label_column=label_column,
            label_order=label_order,
            seed=seed,
            frost_textures=frost_textures,
            output=output,
            plot=plot,
            overwrite=overwrite,
            progress=progress,
        )
    if not State.quiet:
        for path in (output, plot):
            if path is not None:
                stderr.print(f"wrote {path}")
    if as_json:
        emit_json(result.summary())
        return
    _print_tables(result)


def _budget(epsilon: float) -> str:
    grey = epsilon * 255
    return f"{grey:g}/255" if abs(grey - round(grey, 2)) < 1e-6 else f"{epsilon:g}"


def _print_tables(result: RobustnessResult) -> None:
    size = "x".join(map(str, result.img_size))
    table = Table(
        title=f"{result.model} on {result.dataset} ({result.split}, "
        f"{result.num_samples:,} images, {size} px)",
    )
    table.add_column("measurement")
    table.add_column("top-1", justify="right")
    table.add_column("error", justify="right")

    def add(name: str, top1: float | None, error: float) -> None:
        table.add_row(name, "" if top1 is None else f"{100 * top1:.2f} %", f"{100 * error:.2f} %")

    add("clean", result.clean_top1, 1 - result.clean_top1)
    for row in result.attacks:
        how = "" if row.attack == "fgsm" else f", {row.steps} steps of {_budget(row.step_size)}"
        add(f"{row.attack.upper()} ε={_budget(row.epsilon)}{how}", row.top1, 1 - row.top1)
    if result.mean_corruption_error is not None:
        add("corruptions: mean error", None, result.mean_corruption_error)
    if result.mce is not None:
        add("corruptions: mCE (AlexNet = 100 %)", None, result.mce)
    stdout.print(table)
    if result.corruptions:
        _print_corruptions(result)
    if result.num_skipped:
        stdout.print(
            f"{result.num_skipped} unreadable or unlabelled sample(s) skipped", style="yellow"
        )


def _print_corruptions(result: RobustnessResult) -> None:
    severities = sorted({row.severity for row in result.corruptions})
    table = Table(title="corruption error (%) by severity")
    table.add_column("corruption")
    for severity in severities:
        table.add_column(str(severity), justify="right")
    table.add_column("mean", justify="right")
    with_ce = any("ce" in entry for entry in result.corruption_errors)
    if with_ce:
        table.add_column("CE", justify="right")
    by_type = {entry["name"]: entry for entry in result.corruption_errors}
    for name, entry in by_type.items():
        errors = {r.severity: 1 - r.top1 for r in result.corruptions if r.name == name}
        cells = [f"{100 * errors[s]:.1f}" for s in severities]
        cells.append(f"{100 * entry['error']:.1f}")
        if with_ce:
            cells.append(f"{100 * entry['ce']:.1f}" if "ce" in entry else "-")
        table.add_row(name.replace("_", " "), *cells)
    stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command("robustness")(robustness_command)
