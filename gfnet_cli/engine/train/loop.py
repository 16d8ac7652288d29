"""The training loop: :func:`finetune`, read top to bottom.

    set up      check the recipe, seed, load data and model, plan the schedule, resume
    each step   learning rate -> mixing -> forward/loss -> the one all-reduce
                -> backward/clip/step -> metrics -> Ctrl-C and checkpoint cadence
    each epoch  evaluate -> keep the best MODEL -> checkpoint
    the end     train_results.json, push

Each concern is one named function taking the run's fixed parts (:class:`Run`) and its
progress (:class:`RunState`); a new piece of the recipe (EMA, gradient accumulation,
compilation, gradient checkpointing) is one more call in :func:`_train_epoch` or
:func:`_set_up`, not a new branch in a long function. The same code runs in one process and
in many under ``torchrun`` (DistributedDataParallel; ``batch_size`` is per process).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from gfnet_cli.data.datasets import Batch
from gfnet_cli.data.mix import Mixer, step_rng
from gfnet_cli.device import autocast_context
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine import distributed
from gfnet_cli.engine.train.config import TrainConfig, check_config
from gfnet_cli.engine.train.data import eval_loader, prepare_data, train_source
from gfnet_cli.engine.train.model import build_model
from gfnet_cli.engine.train.optim import Schedule, build_optimizer, build_scaler
from gfnet_cli.engine.train.outputs import (
    METRICS_NAME,
    MetricsWriter,
    TrainCallbacks,
    TrainResult,
    prepare_output_dir,
    push_output,
    training_card,
    truncate_metrics,
    write_results,
)
from gfnet_cli.engine.train.state import (
    Run,
    RunState,
    TrainingDivergedError,
    TrainingInterruptedError,
    resume,
    save_checkpoint,
    seed_everything,
)
from gfnet_cli.serialization import save_model

logger = logging.getLogger(__name__)


def finetune(config: TrainConfig, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train MODEL on DATASET into ``config.output_dir``; returns what train_results.json says."""
    dist = distributed.setup(config.device)
    try:
        return _train(config, dist, callbacks or TrainCallbacks())
    finally:
        distributed.cleanup()


def _train(config: TrainConfig, dist: distributed.DistInfo, callbacks: TrainCallbacks
           ) -> TrainResult:  # fmt: skip
    started = time.perf_counter()
    check_config(config, dist.device)
    prepare_output_dir(Path(config.output_dir), config)
    seed_everything(config.seed + dist.rank)
    run = _set_up(config, dist, callbacks, started)
    state = resume(run) if config.resume else RunState()
    if dist.is_main:
        ckpt.clean_temporary_files(run.checkpoint_dir)
        truncate_metrics(run.output_dir / METRICS_NAME, state.global_step)
        callbacks.on_train_begin(run.schedule.total_steps, state.global_step,
                                 run.schedule.steps_per_epoch)  # fmt: skip
    with run.stop.installed(), run.metrics:
        while _epochs_left(run, state):
            summary = _train_epoch(run, state)
            _end_epoch(run, state, summary)
    return _finish(run, state)


# ====================================================================== set up
def _set_up(config: TrainConfig, dist: distributed.DistInfo, callbacks: TrainCallbacks,
            started: float) -> Run:  # fmt: skip
    """Data, model, optimizer and schedule, with every pre-flight check before any step."""
    train_data, eval_data, class_names = prepare_data(config, dist)
    model = build_model(config, class_names)
    source = train_source(train_data, model.config, config, dist)
    evaluation = None
    if eval_data is not None:
        evaluation = eval_loader(eval_data, model.config, class_names, config, dist)
    model.to(dist.device)
    return Run(
        config=config,
        dist=dist,
        model=model,
        train_model=_parallel(model, dist),
        optimizer=build_optimizer(model, config),
        scaler=build_scaler(dist.device, config.precision),
        schedule=Schedule.plan(config, source.steps_per_epoch()),
        source=source,
        eval_loader=evaluation,
        mixer=Mixer(len(class_names), config.mixup, config.cutmix, config.mix_prob,
                    config.mix_switch_prob, config.label_smoothing),  # fmt: skip
        metrics=MetricsWriter(Path(config.output_dir), enabled=dist.is_main),
        callbacks=callbacks,
        identity={"model": config.model, "dataset": config.dataset,
                  "model_config": model.config.to_dict()},  # fmt: skip
        started=started,
    )


def _parallel(model: nn.Module, dist: distributed.DistInfo) -> nn.Module:
    """The module the steps run: DistributedDataParallel over ``model`` under torchrun."""
    if not dist.distributed:
        return model
    device = dist.device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _epochs_left(run: Run, state: RunState) -> bool:
    # A run stopped mid-epoch at its step limit still ends that epoch (evaluate, checkpoint).
    return state.epoch < run.config.epochs and (
        state.global_step < run.schedule.step_limit or state.step_in_epoch > 0
    )


# ====================================================================== one epoch of steps
@dataclass
class StepStats:
    """One step over every process: mean loss, images, and whether Ctrl-C was pressed."""

    loss: float
    images: int
    stop: bool


@dataclass
class EpochMeter:
    """The epoch's running totals: mean train loss and images per second."""

    started: float = field(default_factory=time.perf_counter)
    loss_sum: float = 0.0
    images: int = 0

    def add(self, step: StepStats) -> None:
        self.loss_sum += step.loss * step.images
        self.images += step.images

    def train_loss(self) -> float:
        return self.loss_sum / max(self.images, 1)

    def images_per_second(self) -> float:
        return self.images / max(time.perf_counter() - self.started, 1e-9)


@dataclass
class EpochSummary:
    train_loss: float
    images_per_second: float


def _train_epoch(run: Run, state: RunState) -> EpochSummary:
    """The steps of the epoch ``state.epoch`` (from ``state.step_in_epoch`` when resumed)."""
    run.train_model.train()
    meter = EpochMeter()
    for batch in run.source.batches(state.epoch, state.step_in_epoch):
        if state.global_step >= run.schedule.step_limit:
            break
        lr = _set_lr(run, state.global_step)
        images, labels = _to_device(batch, run.device)
        images, targets = _mix(run, images, labels, state.global_step)
        loss = _forward_loss(run, images, labels, targets)
        step = _all_reduce(loss, len(labels), run)
        _check_finite(run, state, step.loss)
        _optimizer_step(run, loss)
        state.advance(step.loss)
        meter.add(step)
        _report_step(run, state, step, lr, meter)
        if step.stop:
            _stop_with_checkpoint(run, state)
        if _checkpoint_due(run, state):
            save_checkpoint(run, state)
    return EpochSummary(meter.train_loss(), meter.images_per_second())


def _set_lr(run: Run, step: int) -> float:
    lr = run.schedule.lr_at(step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _to_device(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (batch.images.to(device, non_blocking=True),
            batch.labels.to(device, non_blocking=True))  # fmt: skip


def _mix(run: Run, images: torch.Tensor, labels: torch.Tensor, step: int
         ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Mixup/cutmix: mixed images and probability targets (None: plain labels)."""
    if not (run.mixer.enabled and len(labels)):
        return images, None
    # Seeded by (seed, rank, step), not global state: a resumed run mixes alike.
    rng = step_rng(run.config.seed, run.dist.rank, step)
    images, targets, _ = run.mixer(images, labels, rng)
    return images, targets


def _forward_loss(run: Run, images: torch.Tensor, labels: torch.Tensor,
                  targets: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    with autocast_context(run.device, run.config.precision):
        logits = run.train_model(images)
    if not len(labels):
        return logits.sum() * 0.0  # every image of the batch was unreadable: join the step
    if targets is not None:
        return F.cross_entropy(logits.float(), targets)  # probability targets (mixed)
    return F.cross_entropy(logits.float(), labels, label_smoothing=run.config.label_smoothing)


def _all_reduce(loss: torch.Tensor, images: int, run: Run) -> StepStats:
    """The step's one collective: loss sum, image count and Ctrl-C, summed over processes."""
    totals = torch.tensor(
        [loss.detach().float().item() * images, images, float(run.stop.requested)]
    )
    distributed.all_reduce_sum(totals)
    count = totals[1].item()
    return StepStats(totals[0].item() / max(count, 1), int(count), totals[2].item() > 0)


def _check_finite(run: Run, state: RunState, loss: float) -> None:
    """Stop before a NaN/Inf loss reaches the weights (every process sees the same loss)."""
    if math.isfinite(loss):
        return
    checkpoints = ckpt.list_checkpoints(run.checkpoint_dir)
    raise TrainingDivergedError(
        f"the loss became {loss} at step {state.global_step + 1} (epoch {state.epoch + 1}): "
        "lower lr or use precision fp32; "
        + (
            f"the last good checkpoint is in {run.checkpoint_dir}"
            if checkpoints
            else "no checkpoint was written before it"
        ),
        param=("lr", "precision"),
    )


def _optimizer_step(run: Run, loss: torch.Tensor) -> None:
    """Backward (scaled for fp16), clip the gradient norm, step the optimizer."""
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.config.clip_grad > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()


def _report_step(run: Run, state: RunState, step: StepStats, lr: float,
                 meter: EpochMeter) -> None:  # fmt: skip
    """Progress callback every step, a metrics line every ``log_every`` steps (rank 0)."""
    if not run.dist.is_main:
        return
    ips = meter.images_per_second()
    run.callbacks.on_step(state.global_step, state.epoch, step.loss, lr, ips)
    if state.global_step % run.config.log_every == 0:
        run.metrics.write({"type": "train", "step": state.global_step, "epoch": state.epoch,
                           "loss": step.loss, "lr": lr, "images_per_second": ips})  # fmt: skip


def _stop_with_checkpoint(run: Run, state: RunState) -> None:
    save_checkpoint(run, state)
    raise TrainingInterruptedError(
        f"interrupted at step {state.global_step}; checkpoint saved in {run.checkpoint_dir}: "
        "continue the run with resume",
        param="resume",
    )


def _checkpoint_due(run: Run, state: RunState) -> bool:
    """Every ``checkpoint_every`` steps, except where the epoch's end checkpoints anyway."""
    every = run.config.checkpoint_every
    return (
        every > 0
        and state.global_step % every == 0
        and (run.config.streaming or state.step_in_epoch < run.schedule.steps_per_epoch)
        and state.global_step < run.schedule.step_limit
    )


# ====================================================================== end of an epoch
def _end_epoch(run: Run, state: RunState, summary: EpochSummary) -> None:
    """Evaluate, keep the best MODEL (rank 0), then checkpoint the epoch boundary."""
    top1 = top5 = eval_loss = None
    if run.eval_loader is not None:
        top1, top5, eval_loss, state.eval_count = _evaluate(
            run.model, run.eval_loader, run.device, run.config.precision
        )
    stats = state.record_epoch(summary.train_loss, summary.images_per_second, top1, top5,
                               eval_loss)  # fmt: skip
    if run.dist.is_main:
        run.metrics.write({"type": "eval", **asdict(stats)})
        if stats.is_best:
            save_model(run.model, run.output_dir, card=training_card(run.model, run.config, stats))
        run.callbacks.on_epoch_end(stats)
    state.next_epoch()
    save_checkpoint(run, state)


@torch.no_grad()
def _evaluate(model: nn.Module, loader: DataLoader, device: torch.device, precision: str
              ) -> tuple[float, float, float, int]:  # fmt: skip
    """Top-1, top-5 (fractions), mean cross-entropy and how many labelled images were scored,
    summed over every process's shard (labels the training classes lack, -1, are skipped)."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # correct@1, correct@5, loss sum, count
    for batch in loader:
        labels = batch.labels.to(device)
        keep = labels >= 0
        if not bool(keep.any()):
            continue
        with autocast_context(device, precision):
            logits = model(batch.images.to(device)[keep]).float()
        labels = labels[keep]
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        totals[0] += hits[:, 0].sum().item()
        totals[1] += hits.any(dim=1).sum().item()
        totals[2] += F.cross_entropy(logits, labels, reduction="sum").item()
        totals[3] += len(labels)
    distributed.all_reduce_sum(totals)
    count = max(totals[3].item(), 1)
    return (totals[0].item() / count, totals[1].item() / count, totals[2].item() / count,
            int(totals[3].item()))  # fmt: skip


# ====================================================================== the end
def _finish(run: Run, state: RunState) -> TrainResult:
    """The result; rank 0 writes train_results.json and pushes."""
    result = TrainResult(
        output_dir=run.output_dir,
        epochs=state.epoch,
        global_step=state.global_step,
        world_size=run.dist.world_size,
        best_top1=state.best_top1,
        best_top5=state.best_top5,
        best_epoch=state.best_epoch,
        train_loss=state.last_loss,
        train_runtime_s=round(run.runtime_s(state), 3),
        resumed_from_step=state.resumed_from_step,
        num_train_samples=run.source.num_samples(),
        num_eval_samples=_num_eval_samples(run, state),
        images_per_second=(
            round(state.history[-1]["images_per_second"], 2) if state.history else 0.0
        ),
        model=run.config.model,
        dataset=run.config.dataset,
        history=state.history,
    )
    if run.dist.is_main:
        write_results(run.output_dir, result, run.config)
        if run.config.push_to:
            push_output(run.output_dir, run.config.push_to)
        run.callbacks.on_train_end(result)
    return result


def _num_eval_samples(run: Run, state: RunState) -> int:
    if run.eval_loader is None:
        return 0
    if run.config.streaming:  # a stream's length is what the evaluation counted
        return state.eval_count
    return len(run.eval_loader.dataset)
