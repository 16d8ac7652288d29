"""How robust a MODEL is on a DATASET: the paper's Table 3 for any model and data.

One run measures, on the same samples:

- clean top-1, through the model's own evaluation transform;
- top-1 under untargeted L-infinity FGSM and PGD (:mod:`gfnet_cli.analysis.attacks`) at one
  or more budgets, attacking the [0, 1] pixels the transform produces (resized and cropped;
  the model normalizes inside);
- top-1 under the 15 common corruptions of ImageNet-C at severities 1-5
  (:mod:`gfnet_cli.analysis.corruptions`), computed on the fly from the same pixels; their
  mean error, and the mCE against AlexNet's published errors when an ImageNet-1k model is
  evaluated on ImageNet data.

Images are decoded, resized and corrupted in DataLoader workers; labels are matched to the
model's classes by name before anything runs (as ``evaluate`` matches them). The attack pass
comes first (one pass over the data), then one pass per corruption type, whose workers produce
every requested severity of each image.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gfnet_cli.analysis.attacks import (
    ATTACKS,
    DEFAULT_EPSILON,
    DEFAULT_PGD_STEPS,
    PixelModel,
    check_epsilon,
    check_pgd,
    fgsm,
    pgd,
    pgd_step,
)
from gfnet_cli.analysis.corruptions import (
    ALEXNET_ERRORS,
    CORRUPTIONS,
    SAVE_QUALITY,
    SEVERITIES,
    check_severity,
    corrupt_severities,
    parse_corruptions,
)
from gfnet_cli.analysis.outputs import require_matplotlib
from gfnet_cli.commands.evaluate import evenly_spaced, match_labels, require_labels
from gfnet_cli.data.datasets import (
    Batch,
    DatasetError,
    ImageDataset,
    collate_skipping_failures,
    load_image_dataset,
)
from gfnet_cli.data.transforms import pixel_transform
from gfnet_cli.device import check_precision, resolve_device
from gfnet_cli.engine.inference import (
    ProgressCallback,
    check_at_least,
    check_img_size,
    default_workers,
    model_name,
    model_task,
    prepare_model,
)
from gfnet_cli.engine.scoring import Skips, scored_rows
from gfnet_cli.errors import UsageError, check_range
from gfnet_cli.hub.serialization import check_output_file, write_text_atomic
from gfnet_cli.labels import imagenet_class_names
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.tasks.base import MetricResult
from gfnet_cli.tasks.classification import CLASSIFICATION

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- results
@dataclass
class AttackRow:
    attack: str
    epsilon: float
    steps: int
    top1: float
    step_size: float  # FGSM: epsilon


@dataclass
class CorruptionRow:
    name: str
    severity: int
    top1: float


@dataclass
class RobustnessResult:
    """What :func:`robustness` measured; fractions in [0, 1], epsilon in [0, 1] pixel units."""

    model: str
    dataset: str
    split: str
    num_samples: int
    clean_top1: float
    attacks: list[AttackRow]
    corruptions: list[CorruptionRow]
    mean_corruption_error: float | None
    mce: float | None = None  # AlexNet-normalized, ImageNet-1k models on ImageNet data only
    corruption_errors: list[dict[str, Any]] = field(default_factory=list)
    num_skipped: int = 0
    pgd_step_size: float | None = None  # None: half of each budget
    pgd_random_start: bool = False
    seed: int = 0
    img_size: list[int] = field(default_factory=list)
    label_mapping: str = "identity"
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 0
    attack_seconds: float = 0.0
    corruption_seconds: float = 0.0
    per_class: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The ``robustness --json`` document of docs/cli.md (plus ``mce``, ``num_skipped``)."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "num_samples": self.num_samples,
            "clean_top1": self.clean_top1,
            "attacks": [asdict(row) for row in self.attacks],
            "corruptions": [asdict(row) for row in self.corruptions],
            "mean_corruption_error": self.mean_corruption_error,
            "mce": self.mce,
            "num_skipped": self.num_skipped,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, per-class figures included: the ``--output`` file."""
        extras = {
            key: value
            for key, value in asdict(self).items()
            if key not in self.summary() and key not in ("attacks", "corruptions")
        }
        return {"task": "robustness", **self.summary(), **extras}

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


# ------------------------------------------------------------------------------- the run
@dataclass
class _Plan:
    """The checked request: which attacks at which budgets, which corruptions."""

    attacks: list[tuple[str, float]]
    corruptions: list[str]
    severities: list[int]
    pgd_steps: int
    pgd_step_size: float | None


def robustness(
    model: str | GFNetArchitecture,
    dataset: str | ImageDataset,
    *,
    split: str | None = None,
    dataset_config: str | None = None,
    attacks: str | Sequence[str] = ATTACKS,
    epsilons: Sequence[float] = (DEFAULT_EPSILON,),
    pgd_steps: int = DEFAULT_PGD_STEPS,
    pgd_step_size: float | None = None,
    pgd_random_start: bool = False,
    corruptions: str | Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    max_samples: int | None = None,
    batch_size: int = 32,
    img_size: int | tuple[int, int] | None = None,
    num_workers: int | None = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    image_column: str | None = None,
    label_column: str | None = None,
    label_order: str = "auto",
    seed: int = 0,
    frost_textures: str | Path | None = None,
    output: str | Path | None = None,
    plot: str | Path | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> RobustnessResult:
    """Clean, adversarial (FGSM, PGD) and corrupted top-1 of ``model`` on ``dataset``.

    ``attacks``: names (``"fgsm,pgd"``; empty: none) run at every budget in ``epsilons``
    ([0, 1] pixel units; default 1/255), PGD with ``pgd_steps`` steps of ``pgd_step_size``
    (default: half the budget, 0.5/255 at 1/255).
    ``corruptions``: ``"all"``, groups (noise, blur, weather, digital) or names; ``None``: none.
    ``severities``: which of 1-5. ``max_samples``: evenly spaced samples of the split.
    ``seed`` fixes every random draw (corruptions, PGD's random start). ``frost_textures``: a
    folder with the original frost photographs (otherwise a procedural frost stands in).
    ``output``/``plot``: also write the full result (JSON) / the curves (PNG).
    ``progress(completed, total)``: work done in images (attack pass plus corruption passes).
    """
    plan = _plan(attacks, epsilons, pgd_steps, pgd_step_size, corruptions, severities)
    check_at_least("batch_size", batch_size, 1)
    check_at_least("max_samples", max_samples, 1)
    check_at_least("num_workers", num_workers, 0)
    check_img_size(img_size)
    check_range("seed", seed, 0, 2**63 - 1)
    output_path = check_output_file(output, "output", overwrite=overwrite, suffixes=(".json",))
    plot_path = check_output_file(plot, "plot", overwrite=overwrite, suffixes=(".png",))
    if plot_path is not None:
        require_matplotlib("plotting the robustness curves (plot)")
    if frost_textures is not None and not Path(frost_textures).is_dir():
        raise UsageError(f"frost_textures {frost_textures} is not a folder", param="frost_textures")
    torch_device = resolve_device(device)
    precision = check_precision(torch_device, precision)
    if model_task(model) != "classification":
        raise UsageError(
            f"{model_name(model)} is made for {model_task(model)}: robustness measures a "
            "classifier's top-1 (evaluate scores segmentation, in mIoU)",
            param="model",
        )
    data = (
        dataset
        if isinstance(dataset, ImageDataset)
        else _load(dataset, split, dataset_config, image_column, label_column)
    )
    _require_labels(data)
    net = prepare_model(model, img_size, torch_device)
    label_map, mapping = match_labels(data, net, label_order)
    transform = pixel_transform(net.config, img_size)
    samples = evenly_spaced(data, transform, label_map, max_samples)
    pixel_model = PixelModel(net, net.config.mean, net.config.std, precision).eval()
    run = _Run(net.num_classes, plan, len(samples), progress)
    workers = default_workers(num_workers)
    logger.info(
        "robustness of %s on %s (%s, %d samples) at %s px: attacks %s, %d corruption(s), %s %s",
        model_name(model),
        data.name,
        data.split,
        len(samples),
        "x".join(map(str, transform.crop)),
        ", ".join(f"{a} {e * 255:.3g}/255" for a, e in plan.attacks) or "none",
        len(plan.corruptions),
        torch_device,
        precision,
    )
    start = time.perf_counter()
    loader = _loader(samples, batch_size, workers, torch_device)
    for batch in loader:
        _attack_batch(run, pixel_model, batch, torch_device, seed, pgd_random_start)
    attack_seconds = time.perf_counter() - start
    run.skips.require_scores(run.scored, "unreadable or unlabelled")
    start = time.perf_counter()
    for name in plan.corruptions:
        views = _CorruptedViews(samples, name, plan.severities, seed, frost_textures)
        for batch in _loader(views, batch_size, workers, torch_device):
            _corruption_batch(run, pixel_model, batch, name, torch_device)
    corruption_seconds = time.perf_counter() - start
    imagenet = net.config.class_names == imagenet_class_names() and mapping != "index"
    result = run.result(
        model=model_name(model),
        dataset=data.name,
        split=data.split,
        labels=net.config.labels,
        imagenet=imagenet,
    )
    result.pgd_random_start, result.seed = pgd_random_start, seed
    result.img_size, result.label_mapping = list(transform.crop), mapping
    result.device, result.precision, result.batch_size = str(torch_device), precision, batch_size
    result.attack_seconds, result.corruption_seconds = attack_seconds, corruption_seconds
    if output_path is not None:
        result.save(output_path)
    if plot_path is not None:
        from gfnet_cli.analysis.plots import plot_robustness

        plot_robustness(result, plot_path)
    return result


def _plan(
    attacks: str | Sequence[str],
    epsilons: Sequence[float],
    pgd_steps: int,
    pgd_step_size: float | None,
    corruptions: str | Sequence[str] | None,
    severities: Sequence[int],
) -> _Plan:
    """Every argument checked before anything is loaded."""
    names = attacks.split(",") if isinstance(attacks, str) else list(attacks)
    names = [n.strip().lower() for n in names if n.strip() and n.strip().lower() != "none"]
    for name in names:
        if name not in ATTACKS:
            raise UsageError(
                f"unknown attack {name!r}: expected {', '.join(ATTACKS)} or none",
                param="attacks",
            )
    budgets = sorted({check_epsilon(e) for e in epsilons})
    if names and not budgets:
        raise UsageError("epsilons: give at least one budget for the attacks", param="epsilons")
    check_pgd(pgd_steps, pgd_step_size)
    chosen = parse_corruptions(corruptions)
    levels = sorted({check_severity(s) for s in severities})
    if chosen and not levels:
        raise UsageError("severities: give at least one of 1-5", param="severities")
    if not names and not chosen:
        logger.info("no attack and no corruption requested: measuring clean accuracy only")
    return _Plan(
        attacks=[(name, eps) for name in dict.fromkeys(names) for eps in budgets],
        corruptions=chosen,
        severities=levels,
        pgd_steps=int(pgd_steps),
        pgd_step_size=None if pgd_step_size is None else float(pgd_step_size),
    )


def _load(
    dataset: str,
    split: str | None,
    dataset_config: str | None,
    image_column: str | None,
    label_column: str | None,
) -> ImageDataset:
    return load_image_dataset(
        dataset,
        split,
        dataset_config=dataset_config,
        image_column=image_column,
        label_column=label_column,
    )


def _require_labels(data: ImageDataset) -> None:
    require_labels(data)
    if data.streaming:
        raise DatasetError(
            "robustness reads a dataset several times: load it without streaming",
            param="streaming",
        )



def _loader(
    view: torch.utils.data.Dataset, batch_size: int, workers: int, device: torch.device
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        view,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_skipping_failures,
        pin_memory=device.type == "cuda",
    )


class _CorruptedViews(torch.utils.data.Dataset):
    """Each sample's pixels at every requested severity of one corruption: (S, 3, H, W).

    Corrupted in the DataLoader worker, seeded by ``(seed, dataset index)`` so the images do
    not depend on batch size, worker count or order.
    """

    def __init__(
        self,
        samples: torch.utils.data.Dataset,
        name: str,
        severities: list[int],
        seed: int,
        frost: str | Path | None,
    ) -> None:
        self.samples, self.name, self.severities = samples, name, severities
        self.seed, self.frost = seed, frost

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> tuple:
        pixels, label, index = self.samples[position]
        if pixels is None:
            return pixels, label, index
        image = (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        stack = corrupt_severities(
            image,
            self.name,
            self.severities,
            seed=(self.seed, index),
            frost_textures=self.frost,
            save_quality=SAVE_QUALITY,
        )
        array = np.stack(stack).transpose(0, 3, 1, 2)
        return torch.from_numpy(array.copy()).float().div_(255.0), label, index


# ------------------------------------------------------------------------------- tallies
class _Run:
    """One metric per measurement (clean, each attack, each corruption and severity), the
    skipped samples, and progress. Every metric stays on the device until :meth:`result`."""

    def __init__(
        self, num_classes: int, plan: _Plan, total: int, progress: ProgressCallback | None
    ) -> None:
        self.plan = plan
        self.num_classes = num_classes
        self.clean = CLASSIFICATION.metric(num_classes)
        self.attacks = {key: CLASSIFICATION.metric(num_classes) for key in plan.attacks}
        self.corruptions = {
            (name, s): CLASSIFICATION.metric(num_classes)
            for name in plan.corruptions
            for s in plan.severities
        }
        self.skips = Skips()
        self.scored = 0  # clean rows scored, counted on the host
        self.progress = progress
        self.done = 0
        self.total = total * (1 + len(plan.corruptions))

    def rows(
        self, batch: Batch, device: torch.device, count_skips: bool
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The scorable rows on ``device`` (skips are recorded once, in the attack pass)."""
        skips = self.skips if count_skips else None
        return scored_rows(batch, CLASSIFICATION, self.num_classes, device, "the dataset", skips)

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.progress is not None:
            self.progress(self.done, self.total)

    def result(
        self, *, model: str, dataset: str, split: str, labels: list[str], imagenet: bool
    ) -> RobustnessResult:
        clean = self.clean.summarize(self.clean.totals(), labels)
        attacks = {key: m.summarize(m.totals(), labels) for key, m in self.attacks.items()}
        corruptions = {
            key: m.summarize(m.totals(), labels) for key, m in self.corruptions.items()
        }
        steps = {"fgsm": 1, "pgd": self.plan.pgd_steps}
        attack_rows = [
            AttackRow(
                name,
                eps,
                steps[name],
                scores.values["top1"],
                eps if name == "fgsm" else pgd_step(eps, self.plan.pgd_step_size),
            )
            for (name, eps), scores in attacks.items()
        ]
        corruption_rows = [
            CorruptionRow(name, severity, scores.values["top1"])
            for (name, severity), scores in corruptions.items()
        ]
        errors = [1 - row.top1 for row in corruption_rows]
        summary = _corruption_summary(corruption_rows, self.plan.severities, imagenet)
        return RobustnessResult(
            model=model,
            dataset=dataset,
            split=split,
            num_samples=clean.count,
            clean_top1=clean.values["top1"],
            attacks=attack_rows,
            corruptions=corruption_rows,
            mean_corruption_error=float(np.mean(errors)) if errors else None,
            mce=summary["mce"],
            corruption_errors=summary["per_type"],
            num_skipped=self.skips.count,
            pgd_step_size=self.plan.pgd_step_size,
            per_class=_per_class(clean, attacks, corruptions),
            skipped=self.skips.reported,
        )


def _per_class(
    clean: MetricResult,
    attacks: dict[tuple[str, float], MetricResult],
    corruptions: dict[tuple[str, int], MetricResult],
) -> list[dict[str, Any]]:
    """Per class: its clean top-1 and its top-1 under each attack and corruption."""

    def top1_by_class(scores: MetricResult) -> dict[int, float]:
        return {row["index"]: row["top1"] for row in scores.per_class}

    attack_top1 = {key: top1_by_class(scores) for key, scores in attacks.items()}
    corruption_top1 = {key: top1_by_class(scores) for key, scores in corruptions.items()}
    return [
        {
            "index": row["index"],
            "label": row["label"],
            "num_samples": row["num_samples"],
            "clean_top1": row["top1"],
            "attacks": [
                {"attack": name, "epsilon": eps, "top1": by_class[row["index"]]}
                for (name, eps), by_class in attack_top1.items()
            ],
            "corruptions": [
                {"name": name, "severity": s, "top1": by_class[row["index"]]}
                for (name, s), by_class in corruption_top1.items()
            ],
        }
        for row in clean.per_class
    ]


def _corruption_summary(
    rows: list[CorruptionRow], severities: list[int], imagenet: bool
) -> dict[str, Any]:
    """Per corruption type: its mean error and, for ImageNet, its AlexNet-normalized CE.

    ``CE_c = sum_s E_{s,c} / sum_s E^AlexNet_{s,c}`` needs all five severities (AlexNet's
    errors are published as their mean); mCE is the mean of ``CE_c`` over the types measured.
    """
    per_type = []
    complete = tuple(severities) == SEVERITIES
    for name in dict.fromkeys(row.name for row in rows):
        errors = [1 - row.top1 for row in rows if row.name == name]
        entry: dict[str, Any] = {"name": name, "error": float(np.mean(errors))}
        if imagenet and complete:
            entry["ce"] = float(sum(errors) / (len(SEVERITIES) * ALEXNET_ERRORS[name]))
        per_type.append(entry)
    ces = [entry["ce"] for entry in per_type if "ce" in entry]
    if imagenet and rows and not complete:
        logger.info("mCE needs all five severities: not computed")
    elif imagenet and rows and len(ces) < len(CORRUPTIONS):
        logger.info("mCE over %d of the 15 corruption types", len(ces))
    return {"per_type": per_type, "mce": float(np.mean(ces)) if ces else None}


# ------------------------------------------------------------------------------- batches
def _attack_batch(
    run: _Run,
    model: PixelModel,
    batch: Batch,
    device: torch.device,
    seed: int,
    random_start: bool,
) -> None:
    """Clean and adversarial predictions of one batch."""
    rows = run.rows(batch, device, count_skips=True)
    if rows is not None:
        images, targets = rows  # rows picked after the (pinned) copy
        run.clean.update(_predict(model, images), targets)
        run.scored += len(targets)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + int(batch.indices.min()))
        for (name, eps), metric in run.attacks.items():
            if name == "fgsm":
                adversarial = fgsm(model, images, targets, eps)
            else:
                adversarial = pgd(
                    model,
                    images,
                    targets,
                    eps,
                    steps=run.plan.pgd_steps,
                    step_size=run.plan.pgd_step_size,
                    random_start=random_start,
                    generator=generator,
                )
            metric.update(_predict(model, adversarial), targets)
    run.advance(batch.rows)


def _corruption_batch(
    run: _Run, model: PixelModel, batch: Batch, name: str, device: torch.device
) -> None:
    """Predictions of one batch at every severity of corruption ``name``."""
    rows = run.rows(batch, device, count_skips=False)
    if rows is not None:
        stacks, targets = rows  # (B, S, 3, H, W): every severity of each image
        for position, severity in enumerate(run.plan.severities):
            run.corruptions[(name, severity)].update(_predict(model, stacks[:, position]), targets)
    run.advance(batch.rows)


def _predict(model: PixelModel, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(images)

