"""The training loop: :func:`finetune`, read top to bottom.

    set up      check the recipe, lock the output folder, seed, load data and model (its
                head kept or new), wrap (DDP, compile), plan the schedule, resume
    each step   learning rate -> for each of the ``accumulate`` micro-batches: labels
                checked on the host -> to the device (a stand-in image when none was
                readable) -> mixing -> forward/loss -> backward (gradients synchronized on
                the last one only) -> the one all-reduce (the step's one wait for the
                device) -> finite check -> clip/step -> EMA (both skipped when no process
                had an image) -> metrics -> Ctrl-C and checkpoint cadence
    each epoch  evaluate (the raw weights and the EMA) -> keep the best MODEL -> checkpoint
    the end     train_results.json, push

Each concern is one named function taking the run's fixed parts (:class:`Run`) and its
progress (:class:`RunState`), instead of closures over mutable locals. The same code runs in
one process and in many under ``torchrun`` (DistributedDataParallel; ``batch_size`` is per
process and micro-batch).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gfnet_cli.data.datasets import Batch, DatasetError
from gfnet_cli.data.mix import Mixer, step_rng
from gfnet_cli.device import autocast_context, deterministic_algorithms
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine import distributed
from gfnet_cli.engine.scoring import score
from gfnet_cli.engine.train.config import TrainConfig, check_config, training_filter_form
from gfnet_cli.engine.train.data import (
    check_training_targets,
    eval_loader,
    prepare_data,
    train_source,
    where,
)
from gfnet_cli.engine.train.ema import ModelEma
from gfnet_cli.engine.train.lock import locked_output_dir
from gfnet_cli.engine.train.model import build_model
from gfnet_cli.engine.train.optim import Schedule, build_optimizer, build_scaler
from gfnet_cli.engine.train.outputs import (
    METRICS_NAME,
    EpochStats,
    MetricsWriter,
    TrainCallbacks,
    TrainResult,
    completed_run,
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
from gfnet_cli.errors import is_disk_full, write_error
from gfnet_cli.hub.serialization import load_model_folder, save_model, write_text_atomic
from gfnet_cli.models.config import CARD_NAME
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.models.layers import (
    filter_form,
    filter_form_choices,
    filter_form_state,
    load_filter_form_state,
)
from gfnet_cli.tasks.base import MetricResult
from gfnet_cli.tasks.classification import LabelRangeError

logger = logging.getLogger(__name__)
UNREADABLE_NAMED = 10  # unreadable training images named in the log before counting only


def finetune(config: TrainConfig, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train MODEL on DATASET into ``config.output_dir``; returns what train_results.json says.

    With ``config.deterministic`` PyTorch's deterministic mode is on for the whole call (set
    before CUDA starts) and the previous settings are restored when it returns.

    The global filters train in the faster of their two forms, measured per filter on the
    first step (``filter_form("auto")``); every process takes process 0's choices, which each
    checkpoint records and a resume takes back, since the forms round differently. Evaluation
    inside training runs the FFT form, so a run and its resume score alike. With
    ``deterministic`` everything runs the FFT form (a timing is not reproducible);
    ``filter_form`` fixes one form for all.
    """
    form = training_filter_form(config)
    with deterministic_algorithms(config.deterministic), filter_form(form):
        dist = distributed.setup(config.device)
        try:
            result = _train(config, dist, callbacks or TrainCallbacks())
            # no process leaves the group while another still talks in it: gloo aborted a
            # process that tore its connections down while process 0 was finishing
            distributed.barrier()
            return result
        except OSError as exc:  # the best MODEL, metrics, results: a full disk says so
            if not is_disk_full(exc):
                raise
            kept = "the checkpoints written before are intact"
            raise write_error(exc, f"into {config.output_dir}", kept) from None
        finally:
            distributed.cleanup(dist)


def _train(config: TrainConfig, dist: distributed.DistInfo, callbacks: TrainCallbacks
           ) -> TrainResult:  # fmt: skip
    started = time.perf_counter()
    check_config(config, dist.device)
    with locked_output_dir(Path(config.output_dir), dist):
        prepare_output_dir(Path(config.output_dir), config)
        done = completed_run(Path(config.output_dir), config) if config.resume else None
        if done is not None:
            if dist.is_main:
                logger.info("%s: the run is already complete (%d epochs, step %d); nothing "
                            "to do", config.output_dir, done.epochs, done.global_step)  # fmt: skip
            return done
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
    data = prepare_data(config, dist)
    train_data, eval_data, class_names = data.train, data.validation, data.class_names
    starting = build_model(config, class_names)
    model = starting.model
    if dist.is_main:
        logger.info("%s", starting.describe())
    source = train_source(train_data, model.config, config, dist)
    evaluation = test = None
    if eval_data is not None:
        evaluation = eval_loader(eval_data, model.config, class_names, config, dist)
    if data.test is not None:
        test = eval_loader(data.test, model.config, class_names, config, dist)
    model.to(dist.device)
    ddp = _parallel(model, dist, config.deterministic)
    return Run(
        config=config,
        dist=dist,
        model=model,
        train_model=_compiled(ddp or model, config.compile),
        ddp=ddp,
        ema=ModelEma(model, config.ema) if config.ema else None,
        head=starting.head,
        optimizer=build_optimizer(model, config),
        scaler=build_scaler(dist.device, config.precision),
        schedule=Schedule.plan(config, source.batches_per_epoch(), dist.world_size),
        source=source,
        eval_loader=evaluation,
        mixer=Mixer(len(class_names), config.mixup, config.cutmix, config.mix_prob,
                    config.mix_switch_prob, config.label_smoothing),  # fmt: skip
        metrics=MetricsWriter(Path(config.output_dir), enabled=dist.is_main),
        callbacks=callbacks,
        identity={"model": config.model, "dataset": config.dataset,
                  "model_config": model.config.to_dict()},  # fmt: skip
        started=started,
        train_split=where(train_data),
        eval_split=where(eval_data) if eval_data is not None else None,
        test_loader=test,
        test_split=where(data.test) if data.test is not None else None,
    )


def _parallel(model: nn.Module, dist: distributed.DistInfo, deterministic: bool = False
              ) -> nn.parallel.DistributedDataParallel | None:  # fmt: skip
    """DistributedDataParallel over ``model`` when a process group is active.

    ``deterministic``: DDP regroups its gradient buckets in backward order after the first
    step of every session, so a resumed run would all-reduce its first step in other buckets
    (another summation order over 3+ processes) than the original run did at that step. With
    ``find_unused_parameters`` the reducer never rebuilds them: the same buckets every step,
    at the cost of one walk over the autograd graph per step.
    """
    if not dist.distributed:
        return None
    device = dist.device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=deterministic,
    )  # fmt: skip


def _compiled(module: nn.Module, compile_model: bool) -> nn.Module:
    """``torch.compile(module)`` with ``compile``: compiled lazily, by the first step."""
    return torch.compile(module) if compile_model else module


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
class LocalStep:
    """One optimizer step in this process: its micro-batches' loss sum (on the device, read
    once per step) and images."""

    loss_sum: torch.Tensor
    images: int = 0
    micro_batches: int = 0

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.loss_sum += loss.detach().float() * images
        self.images += images
        self.micro_batches += 1


@dataclass
class EpochMeter:
    """This session's images per second in the epoch (the loss sums are in the RunState,
    which checkpoints them)."""

    started: float = field(default_factory=time.perf_counter)
    timed_images: int = 0  # images since ``started`` (a compiling first step is not timed)

    def add(self, step: StepStats) -> None:
        self.timed_images += step.images

    def restart_clock(self) -> None:
        self.started, self.timed_images = time.perf_counter(), 0

    def images_per_second(self) -> float:
        return self.timed_images / max(time.perf_counter() - self.started, 1e-9)


@dataclass
class EpochSummary:
    train_loss: float
    images_per_second: float


class Lookahead:
    """An iterator that knows whether another item follows (the last micro-batch of a step
    synchronizes the gradients, so it must be known before its backward pass)."""

    _END = object()

    def __init__(self, items: Iterable[Batch]) -> None:
        self._items = iter(items)
        self._next = None
        self._pulled = False

    def __bool__(self) -> bool:
        if not self._pulled:
            self._next, self._pulled = next(self._items, self._END), True
        return self._next is not self._END

    def pop(self) -> Batch:
        if not self:
            raise IndexError("no batch left")
        self._pulled = False
        return self._next  # type: ignore[return-value]


def _train_epoch(run: Run, state: RunState) -> EpochSummary:
    """The steps of the epoch ``state.epoch`` (from ``state.step_in_epoch`` when resumed)."""
    run.train_model.train(not run.config.eval_mode)  # the authors' fine-tuning: eval mode
    meter = EpochMeter()
    accumulate = run.config.accumulate
    batches = Lookahead(run.source.batches(state.epoch, state.step_in_epoch * accumulate))
    while state.global_step < run.schedule.step_limit and batches:
        lr = _set_lr(run, state.global_step)
        local = _accumulate_gradients(run, batches, state.global_step)
        step = _all_reduce(local, run)  # the step's one wait for the device
        _check_finite(run, state, step.loss)
        _share_filter_forms(run)
        if step.images:  # else no process had a readable image: nothing to learn from
            _optimizer_step(run, local.micro_batches)
            _update_ema(run)
        state.advance(step.loss if step.images else None, step.images)
        meter.add(step)
        _time_compilation(run, meter)
        _report_step(run, state, step, lr, meter)
        if step.stop:
            _stop_with_checkpoint(run, state)
        if _checkpoint_due(run, state):
            save_checkpoint(run, state)
    return EpochSummary(state.epoch_train_loss(), meter.images_per_second())


def _share_filter_forms(run: Run) -> None:
    """After this session's first step, every process runs process 0's filter forms: the
    choices a checkpoint records (process 0's) are then those every process trains with."""
    if run.forms_shared:
        return
    run.forms_shared = True
    if run.dist.distributed:
        load_filter_form_state(distributed.all_gather_objects(filter_form_state())[0])


def _set_lr(run: Run, step: int) -> float:
    lr = run.schedule.lr_at(step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _accumulate_gradients(run: Run, batches: Lookahead, step: int) -> LocalStep:
    """Forward and backward over the step's micro-batches (up to ``accumulate``): gradients
    add up, each micro-batch's loss weighing ``1 / accumulate``."""
    run.optimizer.zero_grad(set_to_none=True)
    accumulate = run.config.accumulate
    local = LocalStep(torch.zeros((), device=run.device))
    for index in range(accumulate):
        batch = batches.pop()
        _note_unreadable(run, batch)
        check_training_targets(run.task, batch.labels, run.model.num_classes,
                               run.train_split, batch.indices)  # on the host
        images, labels = _to_device(_images_or_stand_in(run, batch), batch.labels, run.device)
        last = index == accumulate - 1 or not batches
        images, targets = _mix(run, images, labels, step * accumulate + index)
        with _gradient_sync(run, last):
            loss = _forward_loss(run, images, labels, targets)
            run.scaler.scale(loss / accumulate).backward()
        local.add(loss, len(labels))
        if last:
            break
    return local


def _note_unreadable(run: Run, batch: Batch) -> None:
    """Say which training images were skipped: the first few by name, then how many.

    Training goes on without them (evaluation counts them likewise), but a user must learn
    that part of the data never reached the model.
    """
    for index, reason in batch.failures:
        run.unreadable += 1
        if run.unreadable <= UNREADABLE_NAMED:
            logger.warning("%s: skipped unreadable image %d (%s)", run.train_split, index, reason)
        if run.unreadable == UNREADABLE_NAMED:
            logger.warning("%s: further unreadable images are skipped without a message; the "
                           "count is in train_results.json", run.train_split)  # fmt: skip


def _gradient_sync(run: Run, last: bool) -> contextlib.AbstractContextManager:
    """DDP all-reduces the gradients in the last micro-batch's backward only (``no_sync``
    before it): one gradient all-reduce per optimizer step, whatever ``accumulate``."""
    if run.ddp is None or last:
        return contextlib.nullcontext()
    return run.ddp.no_sync()


def _images_or_stand_in(run: Run, batch: Batch) -> torch.Tensor:
    """The batch's images, or one black image when none of them could be read.

    A process without images must still run forward and backward: under DDP the others wait
    for its share of the gradient all-reduce. The stand-in's loss is multiplied by 0 (its
    gradients are zeros) and it counts as no image, so the loss and metrics leave it out.
    """
    if len(batch.labels):
        return batch.images
    height, width = run.model.config.image_size
    return torch.zeros(1, run.model.config.in_chans, height, width)


def _to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def _mix(run: Run, images: torch.Tensor, labels: torch.Tensor, micro_step: int
         ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Mixup/cutmix: mixed images and probability targets (None: plain labels)."""
    if not (run.mixer.enabled and len(labels)):
        return images, None
    # Seeded by (seed, rank, micro-step), not global state: a resumed run mixes alike.
    rng = step_rng(run.config.seed, run.dist.rank, micro_step)
    images, targets, _ = run.mixer(images, labels, rng)
    return images, targets


def _forward_loss(run: Run, images: torch.Tensor, labels: torch.Tensor,
                  targets: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    with autocast_context(run.device, run.config.precision):
        logits = run.train_model(images)
    if not len(labels):
        return logits.sum() * 0.0  # the stand-in of an unreadable batch: zero gradients
    # probability targets when mixed, else the labels
    return run.task.loss(logits, labels if targets is None else targets,
                         label_smoothing=run.config.label_smoothing)  # fmt: skip


def _all_reduce(local: LocalStep, run: Run) -> StepStats:
    """The step's one collective: loss sum, image count and Ctrl-C, summed over processes
    (a CPU tensor: gloo carries it even when the gradients go over NCCL).

    Reading the loss is the step's only host synchronization (fp16's GradScaler adds its own
    inf check in its step); it comes after backward and before clipping and the optimizer
    step, so a non-finite loss is never applied.
    """
    totals = torch.tensor(
        [local.loss_sum.item(), local.images, float(run.stop.requested)], dtype=torch.float64
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


def _optimizer_step(run: Run, micro_batches: int) -> None:
    """Clip the gradient norm and step the optimizer (through the fp16 loss scaler).

    An epoch's last step may have fewer micro-batches than ``accumulate``: its gradient is
    rescaled so it is their mean, as a full step's is.
    """
    if micro_batches < run.config.accumulate:
        grads = [p.grad for p in run.model.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, run.config.accumulate / micro_batches)
    if run.config.clip_grad > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()


def _update_ema(run: Run) -> None:
    if run.ema is not None:
        run.ema.update(run.model)


def _time_compilation(run: Run, meter: EpochMeter) -> None:
    """With ``compile``, this session's first step compiles the model: its time is reported
    apart (``compile_time_s``) and left out of images per second."""
    if run.config.compile and run.compile_time_s is None:
        run.compile_time_s = time.perf_counter() - meter.started
        meter.restart_clock()
        if run.dist.is_main:
            logger.info("compiled in the first step: %.1f s", run.compile_time_s)


def _report_step(run: Run, state: RunState, step: StepStats, lr: float,
                 meter: EpochMeter) -> None:  # fmt: skip
    """Progress callback every step, a metrics line every ``log_every`` steps (rank 0)."""
    if not run.dist.is_main:
        return
    ips = meter.images_per_second()
    run.callbacks.on_step(state.global_step, state.epoch, step.loss, lr, ips)
    if state.global_step % run.config.log_every == 0 and step.images:
        run.metrics.write({"type": "train", "step": state.global_step, "epoch": state.epoch,
                           "loss": step.loss, "lr": lr, "images_per_second": ips})  # fmt: skip


def _stop_with_checkpoint(run: Run, state: RunState) -> None:
    save_checkpoint(run, state)
    error = TrainingInterruptedError(
        f"interrupted ({signal.Signals(run.stop.signal).name}) at step {state.global_step}; "
        f"checkpoint saved in {run.checkpoint_dir}: continue the run with resume",
        param="resume",
    )
    error.exit_code = 128 + run.stop.signal
    raise error


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
    """Evaluate the raw weights (and the EMA), keep the better as the best MODEL (rank 0),
    then checkpoint the epoch boundary."""
    raw = ema = None
    if run.eval_loader is not None:
        raw = _evaluate(run, run.model)
        if run.ema is not None:
            ema = _evaluate(run, run.ema.module)
        state.eval_count = raw.count
    stats = state.record_epoch(summary.train_loss, summary.images_per_second, raw, ema)
    if run.dist.is_main:
        run.metrics.write({"type": "eval", **asdict(stats)})
        if stats.is_best:
            kept = run.ema.module if stats.weights == "ema" else run.model
            card = training_card(kept, run.config, stats, head=run.head,
                                 world_size=run.dist.world_size,
                                 validation_split=run.eval_split)  # fmt: skip
            save_model(kept, run.output_dir, card=card)
        run.callbacks.on_epoch_end(stats)
    state.next_epoch()
    save_checkpoint(run, state)


@torch.no_grad()
def _evaluate(run: Run, model: GFNetArchitecture, *, test: bool = False) -> MetricResult:
    """The task's metrics on the validation split (or, with ``test``, the test split) summed
    over every process's shard (rows without a target, such as classes the training split
    lacks, are skipped; unreadable images have none to score).

    The sums stay on the device and are read once, after the last batch; the reduction runs
    on that CPU copy (gloo), as the step's does.
    """
    model.eval()
    distributed.broadcast_buffers(model)  # the statistics of the weights rank 0 saves
    loader, split = (run.test_loader, run.test_split) if test else (run.eval_loader,
                                                                     run.eval_split)  # fmt: skip
    metric = run.task.metric(model.num_classes)
    try:
        with filter_form("fft"):  # measured choices could differ between a run and its resume
            score(model, loader, run.task, metric, num_classes=model.num_classes,
                  device=run.device, precision=run.config.precision, where=split)  # fmt: skip
    except LabelRangeError as exc:
        raise DatasetError(
            f"{exc}; evaluate on a split with the training split's classes (eval_split)",
            param="eval_split",
        ) from None
    totals = metric.totals()
    distributed.all_reduce_sum(totals)
    return metric.summarize(totals, None)


# ====================================================================== the end
def _finish(run: Run, state: RunState) -> TrainResult:
    """The result; rank 0 writes train_results.json and pushes."""
    test = _test(run, state)
    result = TrainResult(
        output_dir=run.output_dir,
        epochs=state.epoch,
        global_step=state.global_step,
        world_size=run.dist.world_size,
        best_top1=state.best_metrics.get("top1"),
        best_top5=state.best_metrics.get("top5"),
        best_metrics=state.best_metrics,
        best_epoch=state.best_epoch,
        best_weights=state.best_weights,
        head=run.head,
        train_loss=state.last_loss,
        train_runtime_s=round(run.runtime_s(state), 3),
        resumed_from_step=state.resumed_from_step,
        num_train_samples=run.source.num_samples(),
        num_eval_samples=_num_eval_samples(run, state),
        images_per_second=(
            round(state.history[-1]["images_per_second"], 2) if state.history else 0.0
        ),
        compile_time_s=None if run.compile_time_s is None else round(run.compile_time_s, 3),
        model=run.config.model,
        dataset=run.config.dataset,
        history=state.history,
        unreadable_train_images=int(
            distributed.all_reduce_sum(torch.tensor([run.unreadable], dtype=torch.int64)).item()
        ),
        validation_split=run.eval_split,
        test=test,
        filter_forms=(filter_form_choices(training=True)
                      if training_filter_form(run.config) == "auto" else {}),  # fmt: skip
    )
    if run.dist.is_main:
        if test is not None:
            _rewrite_card(run, state, test)
        write_results(run.output_dir, result, run.config)
        if run.config.push_to:
            push_output(run.output_dir, run.config.push_to)
        run.callbacks.on_train_end(result)
    return result


def _test(run: Run, state: RunState) -> dict[str, Any] | None:
    """The test split's scores for the weights the run kept (the MODEL folder), read once at
    the end: the test split never chooses anything."""
    if run.test_loader is None:
        return None
    kept = load_model_folder(run.output_dir, device=run.device)
    scores = _evaluate(run, kept, test=True)
    if run.dist.is_main:
        figures = ", ".join(f"{name} {value:.4g}" for name, value in scores.values.items())
        logger.info("%s: %s (epoch %s, chosen on %s)", run.test_split, figures,
                    state.best_epoch, run.eval_split or "nothing: the last epoch")  # fmt: skip
    return {"split": run.test_split, **scores.values, "count": scores.count}


def _rewrite_card(run: Run, state: RunState, test: dict[str, Any]) -> None:
    """The kept MODEL's card again, now with the test split's scores beside validation's."""
    row = next((h for h in state.history if h["epoch"] == state.best_epoch), None)
    if row is None:
        return
    model = load_model_folder(run.output_dir)
    card = training_card(model, run.config, EpochStats(**row), head=run.head,
                         world_size=run.dist.world_size, validation_split=run.eval_split,
                         test=test)  # fmt: skip
    write_text_atomic(run.output_dir / CARD_NAME, card)


def _num_eval_samples(run: Run, state: RunState) -> int:
    if run.eval_loader is None:
        return 0
    if run.config.streaming:  # a stream's length is what the evaluation counted
        return state.eval_count
    return len(run.eval_loader.dataset)
