"""A run's parts and progress, and the checkpoints that save and restore them.

:class:`Run` holds what stays fixed while a run trains (model, optimizer, schedule, data);
:class:`RunState` what the loop advances (step, epoch, best-so-far, history). The loop passes
both to small functions instead of closing over local variables, so every piece of the step
can be read, tested and extended on its own.

A checkpoint is a :class:`Run`'s state dicts (model, its EMA, optimizer, loss scaler) plus a
:class:`RunState`, every process's RNG
states and data positions, and the run's identity (model config, dataset), written by
:mod:`gfnet_cli.engine.checkpoint` (atomic, weights-only loadable). Restoring all of it
resumes a run to the bit: nothing in the loop draws from state a checkpoint does not hold.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from gfnet_cli.data.mix import Mixer
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine import distributed
from gfnet_cli.engine.train.config import TrainConfig
from gfnet_cli.engine.train.data import TrainSource
from gfnet_cli.engine.train.ema import ModelEma
from gfnet_cli.engine.train.optim import Schedule
from gfnet_cli.engine.train.outputs import EpochStats, MetricsWriter, TrainCallbacks
from gfnet_cli.errors import GFNetError, write_error
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.models.layers import filter_form_state, load_filter_form_state
from gfnet_cli.tasks import Task, get_task
from gfnet_cli.tasks.base import MetricResult

logger = logging.getLogger(__name__)


class TrainingDivergedError(GFNetError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterruptedError(GFNetError):
    """Ctrl-C or SIGTERM: a checkpoint was saved, the run can be resumed (exit 128 + the
    signal's number: 130 for Ctrl-C, 143 for SIGTERM)."""

    exit_code = 130


class StopFlag:
    """Ctrl-C (SIGINT) or SIGTERM, what schedulers send before killing a job, asks the loop to
    stop at the next step boundary with a checkpoint (a second signal stops at once).

    The flag is shared over processes by the step's all-reduce, so every process stops at
    the same step and the checkpoint describes one step for all of them.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal: int = signal.SIGINT  # the first signal received

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum
        logger.warning("%s: stopping after this step with a checkpoint (again to abort "
                       "without one)", signal.Signals(signum).name)  # fmt: skip

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            previous = {signum: signal.signal(signum, self._handler) for signum in self.SIGNALS}
        except ValueError:  # not the main thread: no handler, signals behave as usual
            yield
            return
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


@dataclass
class Run:
    """What stays fixed while a run trains; its progress is a :class:`RunState`."""

    config: TrainConfig
    dist: distributed.DistInfo
    model: GFNetArchitecture
    # what the steps run: ``model``, or ``ddp``, compiled with ``compile``
    train_model: nn.Module
    ddp: nn.parallel.DistributedDataParallel | None
    ema: ModelEma | None
    head: str  # "kept" or "new": what became of MODEL's classifier
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: Schedule
    source: TrainSource
    eval_loader: DataLoader | None
    mixer: Mixer
    metrics: MetricsWriter
    callbacks: TrainCallbacks
    identity: dict[str, Any]  # what a checkpoint must match to be resumed by this run
    started: float  # time.perf_counter() when this process started the run
    train_split: str  # "DATASET [split]", as messages name it
    eval_split: str | None
    stop: StopFlag = field(default_factory=StopFlag)
    compile_time_s: float | None = None  # this session's first step, compilation included
    unreadable: int = 0  # training images this process could not read (and skipped)
    forms_shared: bool = False  # this session's processes run process 0's filter forms
    test_loader: DataLoader | None = None  # reported at the end, never chosen on
    test_split: str | None = None

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def task(self) -> Task:
        return get_task(self.model.config.task)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / ckpt.CHECKPOINT_DIR

    def runtime_s(self, state: RunState) -> float:
        """Training time so far, earlier sessions of a resumed run included."""
        return state.runtime_before_s + time.perf_counter() - self.started


@dataclass
class RunState:
    """Where a run is: everything the loop advances (and a checkpoint restores)."""

    global_step: int = 0
    epoch: int = 0  # the epoch in progress, counted from 0
    step_in_epoch: int = 0
    best_score: float | None = None  # the task's primary metric (top-1 for classification)
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None  # counted from 1, as printed
    best_weights: str | None = None  # "raw" or "ema": which weights the best epoch kept
    runtime_before_s: float = 0.0  # training time of the sessions before a resume
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int = 0
    last_loss: float | None = None
    eval_count: int = 0  # labelled images the last evaluation scored, over all processes
    # the epoch's running sums, checkpointed: after a mid-epoch resume the epoch's train_loss
    # averages every step of the epoch, as an uninterrupted run's does
    epoch_loss_sum: float = 0.0
    epoch_images: int = 0

    def advance(self, loss: float | None, images: int = 0) -> None:
        """One optimizer step over ``images`` is done (``loss`` None: it had no image, the
        last loss stays)."""
        self.global_step += 1
        self.step_in_epoch += 1
        if loss is not None:
            self.last_loss = loss
            self.epoch_loss_sum += loss * images
            self.epoch_images += images

    def epoch_train_loss(self) -> float:
        """The mean training loss of the epoch so far, per image."""
        return self.epoch_loss_sum / max(self.epoch_images, 1)

    def record_epoch(
        self,
        train_loss: float,
        images_per_second: float,
        raw: MetricResult | None,
        ema: MetricResult | None = None,
    ) -> EpochStats:
        """The epoch's stats: the better of the raw and the EMA weights by the task's primary
        metric (raw on a tie); keeps the best epoch (the last one without evaluation)."""
        weights, chosen = ("ema", ema) if ema and raw and ema.score > raw.score else ("raw", raw)
        score = chosen.score if chosen else None
        is_best = score is None or self.best_score is None or score > self.best_score
        values = dict(chosen.values) if chosen else {}
        if is_best:
            self.best_score, self.best_epoch = score, self.epoch + 1
            self.best_metrics = values
            self.best_weights = weights
        stats = EpochStats(
            self.epoch + 1, self.global_step, train_loss, values.get("top1"), values.get("top5"),
            values.get("loss"), images_per_second, is_best, weights=weights,
            raw_top1=raw.score if raw and ema else None, ema_top1=ema.score if ema else None,
            metrics=values,
        )  # fmt: skip
        self.history.append(asdict(stats))
        return stats

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss_sum, self.epoch_images = 0.0, 0

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "best_score": self.best_score,
            "best_metrics": json.dumps(self.best_metrics),
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            "history": json.dumps(self.history),
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_images": self.epoch_images,
        }

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> RunState:
        step = int(saved["global_step"])
        return cls(
            global_step=step,
            epoch=int(saved["epoch"]),
            step_in_epoch=int(saved["step_in_epoch"]),
            best_score=saved["best_score"],
            best_metrics=json.loads(saved["best_metrics"]),
            best_epoch=saved["best_epoch"],
            best_weights=saved.get("best_weights"),
            runtime_before_s=float(saved["train_runtime_s"]),
            history=json.loads(saved["history"]),
            resumed_from_step=step,
            # absent from checkpoints written before they were kept
            epoch_loss_sum=float(saved.get("epoch_loss_sum", 0.0)),
            epoch_images=int(saved.get("epoch_images", 0)),
        )


# ====================================================================== RNG
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (each process gets its own seed: ``seed + rank``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _restore_rng(saved: list[dict[str, Any]], rank: int, fallback_seed: int,
                 device: torch.device) -> None:  # fmt: skip
    if rank >= len(saved):
        logger.warning("checkpoint has no RNG state for this process; seeding afresh")
        seed_everything(fallback_seed)
    else:
        ckpt.restore_rng_state(saved[rank], device)


# ====================================================================== checkpoints
def save_checkpoint(run: Run, state: RunState) -> None:
    """Checkpoint the run: every process joins the gathers, rank 0 writes the file."""
    # One flag read off the device for all parameters, not one wait per parameter.
    if not bool(torch.stack([p.isfinite().all() for p in run.model.parameters()]).all()):
        raise TrainingDivergedError(
            f"weights became NaN/Inf at step {state.global_step}; not checkpointing them. "
            f"Lower lr; the last good checkpoint is in {run.checkpoint_dir}",
            param="lr",
        )
    contents = _checkpoint_contents(run, state)
    if run.dist.is_main:
        try:
            ckpt.save_checkpoint(ckpt.to_host(contents), run.checkpoint_dir, state.global_step)
        except OSError as exc:
            kept = "the previous checkpoint is intact"
            raise write_error(exc, f"a checkpoint to {run.checkpoint_dir}", kept) from None
    distributed.barrier()


def _checkpoint_contents(run: Run, state: RunState) -> dict[str, Any]:
    return {
        "model": run.model.state_dict(),
        **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "precision": run.config.precision,
        "schedule": run.schedule.to_dict(),
        **state.to_checkpoint(),
        "train_runtime_s": run.runtime_s(state),
        "rng": distributed.all_gather_objects(ckpt.capture_rng_state(run.device)),
        "stream": distributed.all_gather_objects(run.source.state()),
        "identity": json.dumps(run.identity, sort_keys=True),
        "world_size": run.dist.world_size,
        "filter_forms": filter_form_state(),
    }


def resume(run: Run) -> RunState:
    """Load the newest checkpoint into ``run`` and return its state (a fresh one if none)."""
    found = ckpt.latest_checkpoint(run.checkpoint_dir)
    if found is None:
        logger.warning("resume: no checkpoint in %s; starting afresh", run.checkpoint_dir)
        return RunState()
    path, saved = found
    _check_same_run(saved, run.identity, path)
    run.model.load_state_dict(saved["model"])
    _resume_ema(run, saved, path)
    run.optimizer.load_state_dict(saved["optimizer"])
    resume_scaler(run.scaler, saved, run.config.precision, path)
    state = RunState.from_checkpoint(saved)
    _restore_rng(saved["rng"], run.dist.rank, run.config.seed + run.dist.rank, run.device)
    run.source.resume(saved.get("stream"), state.epoch, state.step_in_epoch, path)
    load_filter_form_state(saved.get("filter_forms", []))  # the forms the steps so far ran
    logger.info("resuming from %s (step %d)", path.name, state.global_step)
    return state


def _resume_ema(run: Run, saved: dict[str, Any], path: Path) -> None:
    """The checkpoint's moving average; one started now when the run had none before."""
    if run.ema is None:
        return
    if "ema" in saved:
        run.ema.load_state_dict(saved["ema"])
        return
    logger.warning("%s holds no EMA weights: the average starts from the resumed weights",
                   path.name)  # fmt: skip
    run.ema.load_state_dict(run.model.state_dict())


def resume_scaler(scaler: torch.amp.GradScaler, saved: dict[str, Any], precision: str,
                  path: Path) -> None:  # fmt: skip
    """The checkpoint's fp16 loss scale, or a fresh one where the checkpoint has none.

    Precision is not part of a run's identity: changing it on resume is legitimate (a run
    started on a CPU in bf16 continues on a GPU in fp16). A checkpoint written in fp32 or bf16
    holds a disabled scaler's empty state, which an enabled GradScaler refuses to load, so
    fp16 then starts from GradScaler's initial scale (it adapts within a few steps). Leaving
    fp16 drops the scale: nothing else uses it.
    """
    before = saved.get("precision")  # absent from checkpoints written before it was recorded
    state = saved.get("scaler") or {}
    if before is not None and before != precision:
        logger.warning("%s was written in precision %s; continuing in %s", path.name, before,
                       precision)  # fmt: skip
    if scaler.is_enabled() and not state:
        logger.warning("%s holds no fp16 loss scale: it starts afresh", path.name)
        return
    scaler.load_state_dict(state)


def _check_same_run(saved: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    before = json.loads(saved.get("identity", "{}"))
    if (
        before.get("model_config") != identity["model_config"]
        or before.get("dataset") != identity["dataset"]
    ):
        raise ckpt.CheckpointError(
            f"{path} belongs to another run (model {before.get('model')!r} on dataset "
            f"{before.get('dataset')!r}): use another output_dir for this one",
            param="output_dir",
        )
