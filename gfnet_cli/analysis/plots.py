"""Figures of the analyses (matplotlib, the optional ``plot`` extra, imported on use).

- :func:`plot_filters`: the learned global filters laid out like the paper's Figure 5: one row
  per layer; on the left the frequency responses (the channel mean, then the first N
  channels), on the right the same channels' spatial kernels; pyramid models one section per
  stage. Colour scales are shared per panel and clipped at the 99.5th percentile of the
  panel's values (``scale="layer"``: each row relative to its own 99.5th percentile).
- :func:`plot_robustness`: top-1 against the attack budget per attack, and corruption error
  against severity per corruption (with their mean).
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gfnet_cli.analysis.outputs import save_figure

if TYPE_CHECKING:
    from gfnet_cli.analysis.filters import FilterResult, LayerFilters
    from gfnet_cli.analysis.robustness import RobustnessResult

CLIP_PERCENTILE = 99.5
FREQUENCY_CMAP = "magma"
SPATIAL_CMAP = "RdBu_r"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------- filters
def plot_filters(
    result: FilterResult, path: Path, *, channels: int = 6, scale: str = "panel"
) -> Path:
    """Draw ``result`` (see the module docstring) into the PNG ``path``."""
    plt = _pyplot()
    stages = [list(group) for _, group in groupby(result.layers, key=lambda layer: layer.stage)]
    shown = min(channels, min(layer.channels for layer in result.layers))
    rows = sum(len(stage) for stage in stages)
    thumb = min(0.9, max(0.4, 24.0 / max(rows, 1)))  # inches per filter; deep models shrink
    header = 0.75  # inches per stage: panel titles and column titles
    width = (2 * shown + 1) * thumb * 1.1 + 3.2  # two colour bars and the row labels
    heights = [len(stage) * thumb * 1.06 + header for stage in stages]
    figure = plt.figure(figsize=(width, sum(heights) + 0.9), layout="constrained")
    pyramid = result.kind == "pyramid"
    figure.suptitle(
        f"{_short(result.model)}: learned global filters", fontsize=14, fontweight="bold"
    )
    sections = figure.subfigures(len(stages), 1, height_ratios=heights, squeeze=False)[:, 0]
    for section, stage in zip(sections, stages, strict=True):
        label = _stage_label(stage, pyramid)
        left, right = section.subfigures(
            1, 2, width_ratios=[(shown + 1) * 1.1 + 1.6, shown * 1.1 + 1.6]
        )
        _frequency_panel(left, stage, shown, scale, label)
        _spatial_panel(right, stage, shown, scale, label)
    figure.supxlabel(_footnote(result, scale), fontsize=8, color="0.35", wrap=True)
    return save_figure(figure, path)


def _short(model: str) -> str:
    """A MODEL folder by its name (a title has no room for a long path)."""
    path = Path(model)
    return path.name if len(path.parts) > 1 and path.exists() else model


def _stage_label(stage: list[LayerFilters], pyramid: bool) -> str:
    first = stage[0]
    rows, cols = first.grid
    prefix = f"stage {first.stage}: " if pyramid else ""
    return f"{prefix}{rows}x{cols} tokens, {first.channels} channels"


def _footnote(result: FilterResult, scale: str) -> str:
    where = "per panel" if scale == "panel" else "per layer (row), relative to its own range"
    flat = {}
    for layer in result.layers:
        rows, cols = layer.grid
        flat.setdefault(f"{rows}x{cols}", layer.stats()["flat_low_frequency_energy"])
    shares = ", ".join(f"{100 * share:.0f} % on {grid}" for grid, share in flat.items())
    return (
        "(a) |spectrum| the layer multiplies by, zero frequency at the centre (axes span "
        "-1/2..1/2 cycles per token); 'mean' averages all channels; LF: share of the filter's "
        f"energy within {result.low_frequency_radius:g} cycles per token of zero frequency (a flat "
        f"filter: {shares}).\n(b) the spatial kernel each channel is circularly convolved "
        f"with, origin at the centre.  Colour scales shared {where}, clipped at the "
        f"{CLIP_PERCENTILE:g}th percentile."
    )


def _row_label(layer: LayerFilters, with_stats: bool) -> str:
    if not with_stats:
        return f"layer {layer.layer}"
    share = layer.stats()["low_frequency_energy"]
    return f"layer {layer.layer}" + ("" if share is None else f"\nLF {100 * share:.0f} %")


def _limit(values: np.ndarray, symmetric: bool) -> float:
    data = np.abs(values) if symmetric else values
    limit = float(np.percentile(data, CLIP_PERCENTILE)) if data.size else 1.0
    return limit if limit > 0 else 1.0


def _frequency_panel(panel: Any, stage: list[LayerFilters], shown: int, scale: str, label: str):
    rows = [[layer.frequency.mean(axis=0), *layer.frequency[:shown]] for layer in stage]
    titles = ["mean", *(f"ch {c + 1}" for c in range(shown))]
    _draw_grid(
        panel,
        stage,
        rows,
        titles,
        scale,
        symmetric=False,
        cmap=FREQUENCY_CMAP,
        title=f"(a) frequency domain  —  {label}",
        bar_label="|W|" if scale == "panel" else "|W|, relative to each layer",
    )


def _spatial_panel(panel: Any, stage: list[LayerFilters], shown: int, scale: str, label: str):
    rows = [list(layer.spatial[:shown]) for layer in stage]
    titles = [f"ch {c + 1}" for c in range(shown)]
    _draw_grid(
        panel,
        stage,
        rows,
        titles,
        scale,
        symmetric=True,
        cmap=SPATIAL_CMAP,
        title=f"(b) spatial domain, first {shown} channels",
        bar_label="kernel weight" if scale == "panel" else "weight, relative to each layer",
    )


def _draw_grid(
    panel: Any,
    stage: list[LayerFilters],
    rows: list[list[np.ndarray]],
    titles: list[str],
    scale: str,
    *,
    symmetric: bool,
    cmap: str,
    title: str,
    bar_label: str,
) -> None:
    axes = panel.subplots(len(rows), len(titles), squeeze=False)
    panel_limit = _limit(np.stack([a for row in rows for a in row]), symmetric)
    image = None
    for r, (layer, images) in enumerate(zip(stage, rows, strict=True)):
        limit = panel_limit if scale == "panel" else _limit(np.stack(images), symmetric)
        for c, array in enumerate(images):
            values = array if scale == "panel" else array / limit
            top = panel_limit if scale == "panel" else 1.0
            axis = axes[r, c]
            image = axis.imshow(
                values,
                cmap=cmap,
                vmin=-top if symmetric else 0.0,
                vmax=top,
                interpolation="nearest",
            )
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if r == 0:
                axis.set_title(titles[c], fontsize=9)
            if c == 0:
                axis.set_ylabel(
                    _row_label(layer, with_stats=not symmetric),
                    fontsize=9,
                    rotation=0,
                    ha="right",
                    va="center",
                )
    panel.suptitle(title, fontsize=10.5)
    if image is not None:
        shrink = 0.9 if len(rows) < 4 else 0.7
        bar = panel.colorbar(
            image, ax=axes, shrink=shrink, aspect=min(40, 8 * len(rows) * shrink), pad=0.02
        )
        bar.set_label(bar_label, fontsize=8)
        bar.ax.tick_params(labelsize=7)


# ---------------------------------------------------------------------------- robustness
def plot_robustness(result: RobustnessResult, path: Path) -> Path:
    """Top-1 against epsilon per attack; corruption error against severity per corruption."""
    plt = _pyplot()
    panels = [
        name
        for name, rows in (("attacks", result.attacks), ("corruptions", result.corruptions))
        if rows
    ]
    if not panels:
        panels = ["attacks"]
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(6.2 * len(panels) + (1.8 if "corruptions" in panels else 0), 4.4),
        squeeze=False,
        layout="constrained",
    )
    for axis, name in zip(axes[0], panels, strict=True):
        if name == "attacks":
            _attack_curves(axis, result)
        else:
            _corruption_curves(axis, result)
    figure.suptitle(
        f"{_short(result.model)} on {_short(result.dataset)} ({result.split}, "
        f"{result.num_samples:,} images)",
        fontsize=12,
    )
    return save_figure(figure, path, dpi=130)


def _attack_curves(axis: Any, result: RobustnessResult) -> None:
    markers = {"fgsm": "o", "pgd": "s"}
    for attack in dict.fromkeys(row.attack for row in result.attacks):
        rows = sorted((r for r in result.attacks if r.attack == attack), key=lambda r: r.epsilon)
        xs = [r.epsilon * 255 for r in rows]
        ys = [100 * r.top1 for r in rows]
        if xs and xs[0] > 0:  # every curve starts at the clean accuracy
            xs, ys = [0.0, *xs], [100 * result.clean_top1, *ys]
        steps = rows[0].steps
        name = attack.upper() + (f" ({steps} steps)" if steps > 1 else "")
        axis.plot(xs, ys, marker=markers.get(attack, "^"), linewidth=2, label=name)
    axis.axhline(
        100 * result.clean_top1,
        color="0.5",
        linestyle="--",
        linewidth=1,
        label=f"clean {100 * result.clean_top1:.1f} %",
    )
    axis.set_xlabel("L∞ budget ε (in 1/255 of the pixel range)")
    axis.set_ylabel("top-1 (%)")
    lowest = min([100 * r.top1 for r in result.attacks] + [100 * result.clean_top1])
    axis.set_ylim(max(0.0, 10 * (lowest // 10) - 10), 100.5)  # room for the curves to read
    axis.set_xlim(left=0)
    axis.set_title("adversarial accuracy")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=9)


_FAMILY_COLOURS = {"noise": "Blues", "blur": "Greens", "weather": "Purples", "digital": "Oranges"}
_STYLES = ("-", "--", "-.", ":")


def _corruption_style(name: str) -> dict[str, Any]:
    """Colour by family (noise blue, blur green, weather purple, digital orange), dash by
    member, so fifteen curves stay tellable apart."""
    from gfnet_cli.analysis.corruptions import GROUPS

    plt = _pyplot()
    for family, members in GROUPS.items():
        if name in members:
            index = members.index(name)
            colour = plt.get_cmap(_FAMILY_COLOURS[family])(0.55 + 0.4 * index / len(members))
            return {"color": colour, "linestyle": _STYLES[index % len(_STYLES)]}
    return {}


def _corruption_curves(axis: Any, result: RobustnessResult) -> None:
    names = list(dict.fromkeys(row.name for row in result.corruptions))
    for name in names:
        rows = sorted((r for r in result.corruptions if r.name == name), key=lambda r: r.severity)
        axis.plot(
            [r.severity for r in rows],
            [100 * (1 - r.top1) for r in rows],
            marker=".",
            linewidth=1.4,
            label=name.replace("_", " "),
            **_corruption_style(name),
        )
    severities = sorted({r.severity for r in result.corruptions})
    means = [
        100 * float(np.mean([1 - r.top1 for r in result.corruptions if r.severity == s]))
        for s in severities
    ]
    axis.plot(severities, means, color="black", linewidth=3, marker="o", label="mean")
    axis.axhline(
        100 * (1 - result.clean_top1), color="0.5", linestyle="--", linewidth=1, label="clean"
    )
    axis.set_xticks(range(1, 6))
    axis.set_xlabel("severity")
    axis.set_ylabel("error (%)")
    axis.set_ylim(0, 100)
    title = "corruption error"
    if result.mce is not None:
        title += f"  (mCE {100 * result.mce:.1f} %)"
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
