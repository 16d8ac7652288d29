"""What a run leaves and reports: progress callbacks, epoch stats, metrics, results, the card.

Rank 0 writes everything in ``output_dir``: ``metrics.jsonl`` (and TensorBoard when it is
installed), the best epoch's MODEL folder with its model card, ``train_results.json``, and,
with ``push_to``, pushes those MODEL files to the Hub. Checkpoints are the loop's
(``checkpoints/``, :mod:`gfnet_cli.engine.train.state`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine.train.config import TrainConfig
from gfnet_cli.engine.train.lock import LOCK_NAME
from gfnet_cli.errors import UsageError
from gfnet_cli.hub.card import model_card
from gfnet_cli.hub.push import push_folder
from gfnet_cli.hub.serialization import write_text_atomic
from gfnet_cli.models.gfnet import GFNetArchitecture

logger = logging.getLogger(__name__)

RESULTS_NAME = "train_results.json"
METRICS_NAME = "metrics.jsonl"
# The MODEL files a push uploads (never the checkpoints or the logs).
PUSHED_FILES = ("config.json", "model.safetensors", "README.md", RESULTS_NAME)


@dataclass
class EpochStats:
    """One finished epoch (``epoch`` counts from 1, as printed).

    ``metrics`` are the task's figures for the weights the epoch keeps (``weights``: ``raw``,
    or ``ema`` when the moving average scored better on the task's primary metric);
    ``top1``/``top5``/``eval_loss`` repeat a classification's. With ``ema`` on, ``raw_top1``
    and ``ema_top1`` give both weights' primary metric.
    """

    epoch: int
    global_step: int
    train_loss: float
    top1: float | None
    top5: float | None
    eval_loss: float | None
    images_per_second: float
    is_best: bool
    weights: str = "raw"
    raw_top1: float | None = None
    ema_top1: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a run did; train_results.json holds it plus the hyperparameters."""

    output_dir: Path
    epochs: int
    global_step: int
    world_size: int
    best_top1: float | None
    best_top5: float | None
    best_epoch: int | None
    best_weights: str | None  # "raw" or "ema": the weights saved as the MODEL folder
    head: str  # "kept": MODEL's classifier was trained on; "new": a fresh one
    train_loss: float | None
    train_runtime_s: float
    resumed_from_step: int
    num_train_samples: int | None  # None: a stream of unknown length
    num_eval_samples: int
    images_per_second: float
    compile_time_s: float | None  # with compile: this session's first step, compiling included
    model: str
    dataset: str
    history: list[dict[str, Any]] = field(default_factory=list)
    #: training images no process could read, skipped (this session, all processes)
    unreadable_train_images: int = 0
    #: every figure of the best epoch's evaluation (the task's metrics)
    best_metrics: dict[str, float] = field(default_factory=dict)
    #: the split whose top-1 chose the best epoch ("DATASET [validation]", or a share of the
    #: training split held out); None: no validation, the last epoch was kept
    validation_split: str | None = None
    #: the test split's scores for the kept weights ({"split", "top1", "top5", "loss",
    #: "count"}), measured once at the end; None without a test split
    test: dict[str, Any] | None = None
    #: ``resume`` found the run already complete: nothing was trained or written
    already_complete: bool = False
    #: the form each global filter trained in, per case (``filter_form("auto")``'s choices,
    #: process 0's; empty when every filter ran the FFT form, as with ``deterministic``)
    filter_forms: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        """A result read back from ``train_results.json`` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["output_dir"] = Path(values["output_dir"])
        return cls(**values)


class TrainCallbacks:
    """Hooks for showing progress (rank 0 only); the default just logs each epoch."""

    def on_train_begin(self, total_steps: int, start_step: int, steps_per_epoch: int) -> None:
        """Before the first step (``start_step`` > 0 when resumed)."""

    def on_step(self, step: int, epoch: int, loss: float, lr: float, ips: float) -> None:
        """After each optimizer step: ``step`` done so far, ``epoch`` from 0, mean loss."""

    def on_epoch_end(self, stats: EpochStats) -> None:
        """After each epoch's evaluation."""
        top = (
            f"validation top-1 {stats.top1:.2%} top-5 {stats.top5:.2%}"
            if stats.top1 is not None
            else "no validation split"
        )
        if "mean_iou" in stats.metrics:
            top = f"eval mIoU {stats.metrics['mean_iou']:.2%}"
        logger.info("epoch %d: train loss %.4f, %s", stats.epoch, stats.train_loss, top)

    def on_train_end(self, result: TrainResult) -> None:
        """After train_results.json is written (and the model pushed)."""


# ====================================================================== output folder
def prepare_output_dir(output_dir: Path, config: TrainConfig) -> None:
    """Refuse a used folder unless resuming or overwriting; overwriting deletes the old run."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output_dir {output_dir} is a file", param="output_dir")
    if config.resume or config.overwrite or not output_dir.is_dir():
        if config.overwrite and not config.resume:
            for old in ckpt.list_checkpoints(output_dir / ckpt.CHECKPOINT_DIR):
                old.unlink(missing_ok=True)
            (output_dir / METRICS_NAME).unlink(missing_ok=True)
        return
    if any(path.name != LOCK_NAME for path in output_dir.iterdir()):
        raise UsageError(
            f"output_dir {output_dir} is not empty: pass resume to continue its run, "
            "overwrite to start over, or choose another folder",
            param=("output_dir", "resume", "overwrite"),
        )


class MetricsWriter:
    """Metrics as JSON lines in the output folder (and TensorBoard when it is installed)."""

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.output_dir = output_dir
        self.path = output_dir / METRICS_NAME
        self.handle: Any = None
        self.tensorboard: Any = None

    def __enter__(self) -> MetricsWriter:
        """Open the files (appending: a resumed run continues them)."""
        if self.enabled:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(self.output_dir / "tensorboard"))
            except ImportError:
                pass
        return self

    def write(self, row: dict[str, Any]) -> None:
        """One JSON line (flushed, so a killed run keeps its metrics); numbers to TensorBoard."""
        if self.handle is None:
            return
        self.handle.write(json.dumps(row) + "\n")
        self.handle.flush()
        if self.tensorboard is not None:
            prefix = row.get("type", "train")
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tensorboard.add_scalar(f"{prefix}/{key}", value, row.get("global_step",
                                                row.get("step", 0)))  # fmt: skip

    def __exit__(self, *exc: Any) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past ``step``: a resumed run writes them again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if row.get("step", row.get("global_step", 0)) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(k + "\n" for k in kept))


def completed_run(output_dir: Path, config: TrainConfig) -> TrainResult | None:
    """The result of the run in ``output_dir`` when it already finished what ``config`` asks
    (``resume`` of a complete run: nothing to train, nothing to rewrite), else None.

    Finished means ``train_results.json`` was written after the newest checkpoint's step and
    that step reached the run's end: ``epochs`` epochs, or ``max_steps``.
    """
    results = output_dir / RESULTS_NAME
    checkpoints = ckpt.list_checkpoints(output_dir / ckpt.CHECKPOINT_DIR)
    if not results.is_file() or not checkpoints:
        return None
    try:
        saved = json.loads(results.read_text(encoding="utf-8"))
        newest_step = int(checkpoints[-1].stem.rpartition("-")[2])
        done = TrainResult.from_dict({**saved, "output_dir": str(output_dir)})
    except (OSError, ValueError, TypeError, KeyError):
        return None  # unreadable results: let the resume decide from the checkpoint
    if done.global_step != newest_step:
        return None
    reached = done.epochs >= config.epochs or (
        config.max_steps is not None and done.global_step >= config.max_steps
    )
    if not reached:
        return None
    done.already_complete = True
    return done


def write_results(output_dir: Path, result: TrainResult, config: TrainConfig) -> None:
    """``train_results.json``: the result and the recipe that produced it."""
    document = result.to_dict() | {"hyperparameters": config.hyperparameters(result.world_size)}
    write_text_atomic(output_dir / RESULTS_NAME, json.dumps(document, indent=2) + "\n")


def training_card(model: GFNetArchitecture, config: TrainConfig, stats: EpochStats, *, head: str,
                  world_size: int = 1, validation_split: str | None = None,
                  test: dict[str, Any] | None = None) -> str:  # fmt: skip
    """The model card: how the model was trained, the validation scores of the kept epoch
    (the split that chose it, named) and, once measured, the test split's."""
    rows = []
    if stats.top1 is not None:
        rows.append({"top1": stats.top1, "top5": stats.top5, "loss": stats.eval_loss,
                     "split": validation_split, "chose_epoch": True})  # fmt: skip
    if test is not None and "top1" in test:
        rows.append({key: test.get(key) for key in ("top1", "top5", "loss", "split")})
    if "mean_iou" in stats.metrics:  # segmentation: its own figures, the same rows
        rows = [dict(stats.metrics) | {"split": validation_split, "chose_epoch": True}]
        if test is not None and "mean_iou" in test:
            rows.append(dict(test))
    return model_card(
        model.config,
        num_params=model.num_params,
        base_model=None if config.from_scratch else config.model,
        dataset=config.dataset,
        hyperparameters={
            **config.hyperparameters(world_size),
            "epoch kept": stats.epoch,
            "head": _head_words(head, model.config.is_segmentation),
            "weights": "EMA of the weights" if stats.weights == "ema" else "raw weights",
        },
        eval_results=rows or None,
    )


def _head_words(head: str, segmentation: bool) -> str:
    if segmentation:
        return "MODEL's head, trained on" if head == "kept" else "new Semantic FPN head"
    return "MODEL's classifier, trained on" if head == "kept" else "new classifier"


def push_output(output_dir: Path, repo_id: str) -> None:
    """Push the MODEL files (not checkpoints) with ``gfnet_cli.hub.push.push_folder``."""
    with tempfile.TemporaryDirectory(prefix="gfnet-push-") as staging:
        for name in PUSHED_FILES:
            if (output_dir / name).is_file():
                shutil.copy2(output_dir / name, Path(staging) / name)
        push_folder(Path(staging), repo_id)

