"""``gfnet profile``: params, GFLOPs, latency, throughput and memory per resolution."""

from __future__ import annotations

import typer
from rich.table import Table

from gfnet_cli.cli._common import State, emit_json, stderr, stdout
from gfnet_cli.cli.options import (
    BASELINES,
    DEFAULT_MODEL,
    BatchSizeOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
    RevisionOption,
)
from gfnet_cli.cli.progress import progress_bar
from gfnet_cli.errors import UsageError


def _parse_compare(value: str | None) -> list[str]:
    names = [name.strip().lower() for name in (value or "").split(",") if name.strip()]
    for name in names:
        if name not in BASELINES:
            raise UsageError(
                f"unknown --compare baseline {name!r}: expected {', '.join(BASELINES)}"
            )
    return names


def _spread(low: float | None, high: float | None) -> str:
    """Three significant digits, in plain notation past 1,000 ms too (not 2.04e+03)."""
    if low is None or high is None:
        return "-"
    return f"{_milliseconds(low)}-{_milliseconds(high)}"


def _milliseconds(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _roof(extra: dict) -> str:
    """``66%``: the row's GFLOP/s as a share of the matmul peak (``--json``: both figures)."""
    return "-" if extra.get("roof_pct") is None else f"{extra['roof_pct']:.0f}%"


def profile_command(
    model: ModelOption = DEFAULT_MODEL,
    resolution: list[int] = typer.Option(
        None, "--resolution", "-r", help="Input size in pixels (repeatable; default: the model's)."
    ),
    batch_size: BatchSizeOption = 1,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    compare: str = typer.Option(
        None, "--compare", help="Baselines of the same width and depth: vit,resmlp"
    ),
    as_json: JsonOption = False,
    plot: str = typer.Option(None, "--plot", help="Write FLOPs/latency/memory vs tokens (PNG)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed forward passes first."),
    repeats: int = typer.Option(10, "--repeats", help="Timed forward passes (median reported)."),
    compile_model: bool = typer.Option(
        False, "--compile", help="torch.compile the model first (slow to start; timed apart)."
    ),
    no_memory: bool = typer.Option(False, "--no-memory", help="Skip the peak-memory measurement."),
    memory_limit: float = typer.Option(
        None, "--memory-limit", help="MB a row may need; rows above it are reported, not run."
    ),
    revision: RevisionOption = None,
    task: str = typer.Option(
        None,
        "--task",
        help="classification or segmentation (backbone + Semantic FPN head; default: the "
        "model's own task).",
    ),
    num_classes: int = typer.Option(
        None, "--num-classes", help="Classes of the head (e.g. 150 for ADE20K segmentation)."
    ),
) -> None:
    """Measure params, GFLOPs, latency, images/s and peak memory per model and resolution.

    No weights are needed: a zoo name means its architecture, a folder or Hub id its config.
    """
    from gfnet_cli.commands.profile import ProfileOptions, profile

    options = ProfileOptions(
        batch_size=batch_size,
        device=device,
        precision=precision,
        warmup=warmup,
        repeats=repeats,
        compile=compile_model,
        measure_memory=not no_memory,
        memory_limit_mb=memory_limit,
    )
    with progress_bar("profiling", "rows", enabled=not State.quiet) as progress:
        rows = profile(model, resolution or (), _parse_compare(compare), options,
                       revision=revision, task=task, num_classes=num_classes, plot=plot,
                       progress=progress)  # fmt: skip
    if plot is not None:
        stderr.print(f"wrote {plot}")
    if as_json:
        emit_json([row.to_dict() for row in rows])
        return
    first = rows[0]
    table = Table(title=f"profile: batch {first.batch_size}, {first.device}, {first.precision}")
    columns = ("model", "res", "tokens", "params", "GFLOPs", "latency ms", "min-max ms", "img/s",
               "forward MB", "roof", "filter")  # fmt: skip
    for column in columns:
        width = max(len(row.model) for row in rows) if column == "model" else None
        table.add_column(column, justify="left" if column in ("model", "filter") else "right",
                         no_wrap=column == "min-max ms", min_width=width)  # fmt: skip
    for row in rows:
        table.add_row(
            row.model,
            str(row.resolution),
            str(row.tokens),
            "-" if row.params is None else f"{row.params / 1e6:.2f}M",
            _fmt(row.gflops, ".2f"),
            row.error if row.error else _fmt(row.latency_ms, ".1f"),
            _spread(row.latency_min_ms, row.latency_max_ms),
            _fmt(row.images_per_second, ".1f"),
            _fmt(row.peak_memory_mb, ".0f"),
            _roof(row.extra),
            row.extra.get("filter_form", "-"),
        )
    stdout.print(table)
    peak = next((r.extra["matmul_peak_gflop_per_s"] for r in rows if "roof_pct" in r.extra), None)
    if peak is not None:
        stdout.print(
            f"roof: this machine's {first.precision} matmul runs at {peak:.0f} GFLOP/s (timed "
            "now); roof: the row's GFLOP/s (2 per MAC) as a share of that rate.",
            style="dim",
        )
    stdout.print(
        "GFLOPs per image (MACs, FFTs included: docs/flops.md); latency per batch (median, "
        "fastest-slowest of the timed runs); forward MB: the memory one forward pass adds "
        "(activations; the weights are not counted); filter: the global filter's form that ran "
        "(fft, matmul: docs/architecture.md).",
        style="dim",
    )


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_command)
