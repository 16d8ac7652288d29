"""Fine-tuning (or training from scratch) a GFNet on an image-classification dataset.

One loop, readable top to bottom (:func:`finetune`): prepare data and model, check everything
that could make the run useless before the first step, then for each epoch train, evaluate,
keep the best weights and checkpoint. The same code runs in one process (CPU, one GPU) and in
many under ``torchrun`` (DistributedDataParallel; ``--batch-size`` is per process).

Exact resumption: the data order comes from a seeded :class:`DistributedSampler` that can skip
the batches already seen, each sample's augmentation from ``(seed, epoch, index)``, each
batch's mixup/cutmix from ``(seed, rank, step)``, and the global RNG (drop-path) is saved and
restored; a run killed at any moment and resumed ends with
the same weights as one never interrupted. With ``streaming`` the training data is a different
source (:class:`StreamSource`: a shuffled, sharded ``datasets`` stream whose position is saved
per worker), not a different loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from gfnet_cli.data.augment import DEFAULT_CROP_SCALE, EpochSampleDataset, train_transform
from gfnet_cli.data.datasets import (
    EVAL_SPLITS,
    TRAIN_SPLITS,
    Batch,
    DatasetError,
    ImageDataset,
    TorchImageDataset,
    TorchIterableImageDataset,
    choose_split,
    collate_skipping_failures,
    find_columns,
    load_splits,
)
from gfnet_cli.data.mix import Mixer, step_rng
from gfnet_cli.data.streaming import (
    DEFAULT_SHUFFLE_BUFFER,
    StreamPosition,
    TrainStream,
    pass_through,
    split_num_examples,
)
from gfnet_cli.data.transforms import eval_transform
from gfnet_cli.device import autocast_context, autocast_dtype, check_precision
from gfnet_cli.engine import checkpoint as ckpt
from gfnet_cli.engine import distributed
from gfnet_cli.errors import GFNetError, UsageError
from gfnet_cli.hub import load_model, resolve_config
from gfnet_cli.models.gfnet import GFNet
from gfnet_cli.serialization import save_model, write_text_atomic

logger = logging.getLogger(__name__)

RESULTS_NAME = "train_results.json"
# A streamed save_to_disk folder is cut into this many shards (at most one per row) so several
# DataLoader workers share it; Hub datasets come with their own shards (files).
STREAM_SHARDS = 64
METRICS_NAME = "metrics.jsonl"


class TrainingDivergedError(GFNetError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterruptedError(GFNetError):
    """Ctrl-C: a checkpoint was saved, the run can be resumed."""

    exit_code = 130


@dataclass
class TrainConfig:
    """Everything ``gfnet finetune`` accepts; defaults are the recipe in docs/training.md."""

    model: str
    dataset: str
    output_dir: Path
    from_scratch: bool = False
    patch_size: int | None = None
    embed_dim: int | list[int] | None = None
    depth: int | list[int] | None = None
    img_size: int | None = None
    crop_pct: float | None = None
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    decay_all: bool = False
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    drop_path: float | None = None
    clip_grad: float = 1.0
    augment: bool = True
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE
    hflip: float = 0.5
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    seed: int = 0
    precision: str = "fp32"
    device: str = "auto"
    num_workers: int = 2
    checkpoint_every: int = 500
    resume: bool = False
    overwrite: bool = False
    push_to: str | None = None
    train_split: str | None = None
    eval_split: str | None = None
    dataset_config: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    log_every: int = 10
    streaming: bool = False
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER

    def hyperparameters(self) -> dict[str, Any]:
        """The recipe as plain values, for the model card and train_results.json."""
        keys = (
            "epochs", "batch_size", "lr", "min_lr", "weight_decay", "decay_all",
            "warmup_epochs", "label_smoothing", "drop_path", "clip_grad", "augment",
            "crop_scale", "hflip", "mixup", "cutmix", "mix_prob", "mix_switch_prob", "seed",
            "precision", "img_size", "from_scratch", "streaming",
        )  # fmt: skip
        values = {k: getattr(self, k) for k in keys}
        values["crop_scale"] = list(self.crop_scale)
        if self.streaming:
            values["shuffle_buffer"] = self.shuffle_buffer
        return values


@dataclass
class EpochStats:
    """One finished epoch (``epoch`` counts from 1, as printed)."""

    epoch: int
    global_step: int
    train_loss: float
    top1: float | None
    top5: float | None
    eval_loss: float | None
    images_per_second: float
    is_best: bool


@dataclass
class TrainResult:
    output_dir: Path
    epochs: int
    global_step: int
    world_size: int
    best_top1: float | None
    best_top5: float | None
    best_epoch: int | None
    train_loss: float | None
    train_runtime_s: float
    resumed_from_step: int
    num_train_samples: int | None  # None: a stream of unknown length
    num_eval_samples: int
    images_per_second: float
    model: str
    dataset: str
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


class TrainCallbacks:
    """Hooks for showing progress (rank 0 only); the default just logs each epoch."""

    def on_train_begin(self, total_steps: int, start_step: int, steps_per_epoch: int) -> None:
        pass

    def on_step(self, step: int, epoch: int, loss: float, lr: float, ips: float) -> None:
        pass

    def on_epoch_end(self, stats: EpochStats) -> None:
        top = (
            f"eval top-1 {stats.top1:.2%} top-5 {stats.top5:.2%}"
            if stats.top1 is not None
            else "no eval split"
        )
        logger.info("epoch %d: train loss %.4f, %s", stats.epoch, stats.train_loss, top)

    def on_train_end(self, result: TrainResult) -> None:
        pass


# ====================================================================== the run
def finetune(config: TrainConfig, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train MODEL on DATASET into ``config.output_dir``; returns what train_results.json says."""
    dist_info = distributed.setup(config.device)
    try:
        return _finetune(config, dist_info, callbacks or TrainCallbacks())
    finally:
        distributed.cleanup()


def _finetune(config: TrainConfig, dist: distributed.DistInfo, cb: TrainCallbacks) -> TrainResult:
    started = time.perf_counter()
    output_dir = Path(config.output_dir)
    ckpt_dir = output_dir / ckpt.CHECKPOINT_DIR
    device, main = dist.device, dist.is_main
    _check_recipe(config, device)
    _check_output_dir(output_dir, config)
    seed_everything(config.seed + dist.rank)

    # ---- data and model, every pre-flight check before any step
    train_data, eval_data, class_names = prepare_data(config, dist)
    model = build_model(config, class_names)
    model_config = model.config
    identity = {
        "model": config.model,
        "dataset": config.dataset,
        "model_config": model_config.to_dict(),
    }

    transform = (
        train_transform(model_config, seed=config.seed, scale=config.crop_scale, hflip=config.hflip)
        if config.augment
        else eval_transform(model_config)
    )
    source_type = StreamSource if config.streaming else SampledSource
    train_source = source_type(train_data, transform, config, dist, device)
    eval_loader = None
    if eval_data is not None:
        eval_loader = _eval_loader(eval_data, eval_transform(model_config), class_names, config,
                                   dist, device)  # fmt: skip
    # The schedule's length: exact for a map-style split, estimated for a stream of known size
    # (its last batches per worker may be partial), else --max-steps over --epochs.
    steps_per_epoch = train_source.steps_per_epoch()
    if steps_per_epoch is None:
        steps_per_epoch = max(1, math.ceil(config.max_steps / config.epochs))
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    # A map-style epoch has exactly steps_per_epoch steps; a stream's ends when the stream does.
    step_limit = (config.max_steps or math.inf) if config.streaming else total_steps
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))

    model.to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay, config.decay_all), lr=config.lr
    )
    scaler = torch.amp.GradScaler(
        device.type, enabled=autocast_dtype(config.precision) == torch.float16
    )

    # ---- resume
    global_step = start_epoch = step_in_epoch = resumed_from = 0
    best_top1: float | None = None
    best_top5: float | None = None
    best_epoch: int | None = None
    elapsed_before, history = 0.0, []
    if config.resume:
        found = ckpt.latest_checkpoint(ckpt_dir)
        if found is None:
            logger.warning("--resume: no checkpoint in %s; starting afresh", ckpt_dir)
        else:
            path, state = found
            _check_same_run(state, identity, path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            global_step = resumed_from = int(state["global_step"])
            start_epoch, step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
            best_top1, best_top5 = state["best_top1"], state["best_top5"]
            best_epoch = state["best_epoch"]
            elapsed_before = float(state["train_runtime_s"])
            history = json.loads(state["history"])
            rng = state["rng"]
            restore_rng(rng[dist.rank] if dist.rank < len(rng) else None, config.seed + dist.rank)
            train_source.resume(state.get("stream"), start_epoch, step_in_epoch, path)
            logger.info("resuming from %s (step %d)", path.name, global_step)
    if main:
        ckpt.clean_temporary_files(ckpt_dir)
        _truncate_metrics(output_dir / METRICS_NAME, global_step)
    train_model: nn.Module = model
    if dist.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def checkpoint_state(epoch: int, in_epoch: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "schedule": {
                "lr": config.lr,
                "min_lr": config.min_lr,
                "warmup_steps": warmup_steps,
                "total_steps": total_steps,
            },  # fmt: skip
            "global_step": global_step,
            "epoch": epoch,
            "step_in_epoch": in_epoch,
            "best_top1": best_top1,
            "best_top5": best_top5,
            "best_epoch": best_epoch,
            "train_runtime_s": elapsed_before + time.perf_counter() - started,
            "history": json.dumps(history),
            "rng": distributed.all_gather_objects(capture_rng()),
            "stream": distributed.all_gather_objects(train_source.state()),
            "identity": json.dumps(identity, sort_keys=True),
            "world_size": dist.world_size,
        }

    def save(epoch: int, in_epoch: int) -> None:
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingDivergedError(
                f"weights became NaN/Inf at step {global_step}; not checkpointing them. "
                f"Lower --lr; the last good checkpoint is in {ckpt_dir}"
            )
        state = checkpoint_state(epoch, in_epoch)  # every rank joins the RNG gather
        if main:
            try:
                ckpt.save_checkpoint(state, ckpt_dir, global_step)
            except OSError as exc:
                raise GFNetError(
                    f"could not write a checkpoint to {ckpt_dir} ({exc.strerror or exc}); "
                    "the previous checkpoint is intact"
                ) from None
        distributed.barrier()

    metrics = MetricsWriter(output_dir, enabled=main)
    stop = StopFlag()
    if main:
        cb.on_train_begin(total_steps, global_step, steps_per_epoch)
    last_loss: float | None = None
    eval_count = 0
    mixer = Mixer(len(class_names), config.mixup, config.cutmix, config.mix_prob,
                  config.mix_switch_prob, config.label_smoothing)  # fmt: skip

    # ---- the loop
    with stop.installed(), metrics:
        epoch = start_epoch
        while epoch < config.epochs and (global_step < step_limit or step_in_epoch > 0):
            train_model.train()
            loss_sum = seen = 0.0
            window_start, window_images = time.perf_counter(), 0
            for batch in train_source.batches(epoch, step_in_epoch):
                if global_step >= step_limit:
                    break
                lr = lr_at(global_step, config.lr, config.min_lr, warmup_steps, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images = batch.images.to(device, non_blocking=True)
                labels = batch.labels.to(device, non_blocking=True)
                targets = None
                if mixer.enabled and len(labels):
                    # Seeded by (seed, rank, step), not global state: a resumed run mixes alike.
                    rng = step_rng(config.seed, dist.rank, global_step)
                    images, targets, _ = mixer(images, labels, rng)
                with autocast_context(device, config.precision):
                    logits = train_model(images)
                    if not len(labels):
                        loss = logits.sum() * 0.0  # every image of the batch was unreadable
                    elif targets is not None:
                        loss = F.cross_entropy(logits.float(), targets)  # probability targets
                    else:
                        loss = F.cross_entropy(
                            logits.float(), labels, label_smoothing=config.label_smoothing
                        )
                # One small all-reduce: the mean loss over ranks, the image count, Ctrl-C.
                stats = torch.tensor(
                    [loss.detach().float().item() * len(labels), len(labels), float(stop.requested)]
                )
                distributed.all_reduce_sum(stats)
                step_loss = stats[0].item() / max(stats[1].item(), 1)
                if not math.isfinite(step_loss):
                    raise TrainingDivergedError(
                        f"the loss became {step_loss} at step {global_step + 1} (epoch "
                        f"{epoch + 1}): lower --lr or use --precision fp32; "
                        + (
                            f"the last good checkpoint is in {ckpt_dir}"
                            if ckpt.list_checkpoints(ckpt_dir)
                            else "no checkpoint was written before it"
                        )
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.clip_grad > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                global_step += 1
                step_in_epoch += 1
                loss_sum += step_loss * stats[1].item()
                seen += stats[1].item()
                window_images += int(stats[1].item())
                last_loss = step_loss

                if main:
                    ips = window_images / max(time.perf_counter() - window_start, 1e-9)
                    cb.on_step(global_step, epoch, step_loss, lr, ips)
                    if global_step % config.log_every == 0:
                        row = {"type": "train", "step": global_step, "epoch": epoch}
                        metrics.write(row | {"loss": step_loss, "lr": lr, "images_per_second": ips})
                if stats[2].item() > 0:
                    save(epoch, step_in_epoch)
                    raise TrainingInterruptedError(
                        f"interrupted at step {global_step}; checkpoint saved in {ckpt_dir}: "
                        "run the same command with --resume to continue"
                    )
                if (
                    config.checkpoint_every > 0
                    and global_step % config.checkpoint_every == 0
                    and (config.streaming or step_in_epoch < steps_per_epoch)
                    and global_step < step_limit
                ):
                    save(epoch, step_in_epoch)
            train_loss = loss_sum / max(seen, 1)
            ips = window_images / max(time.perf_counter() - window_start, 1e-9)

            # ---- evaluate, keep the best, checkpoint the epoch
            top1 = top5 = eval_loss = None
            if eval_loader is not None:
                top1, top5, eval_loss, eval_count = _evaluate_counts(
                    model, eval_loader, device, config.precision
                )
            is_best = top1 is None or best_top1 is None or top1 > best_top1
            if is_best:
                best_top1, best_top5, best_epoch = top1, top5, epoch + 1
            stats_row = EpochStats(epoch + 1, global_step, train_loss, top1, top5, eval_loss, ips,
                                   is_best)  # fmt: skip
            history.append(asdict(stats_row))
            if main:
                metrics.write({"type": "eval", **asdict(stats_row)})
                if is_best:
                    save_model(model, output_dir, card=training_card(model, config, stats_row))
                cb.on_epoch_end(stats_row)
            epoch += 1
            step_in_epoch = 0
            save(epoch, 0)

    # ---- results
    runtime = elapsed_before + time.perf_counter() - started
    result = TrainResult(
        output_dir=output_dir,
        epochs=epoch,
        global_step=global_step,
        world_size=dist.world_size,
        best_top1=best_top1,
        best_top5=best_top5,
        best_epoch=best_epoch,
        train_loss=last_loss,
        train_runtime_s=round(runtime, 3),
        resumed_from_step=resumed_from,
        num_train_samples=train_source.num_samples(),
        num_eval_samples=(
            0
            if eval_loader is None
            else eval_count
            if config.streaming
            else len(eval_loader.dataset)
        ),  # fmt: skip
        images_per_second=round(history[-1]["images_per_second"], 2) if history else 0.0,
        model=config.model,
        dataset=config.dataset,
        history=history,
    )
    if main:
        document = result.to_dict() | {"hyperparameters": config.hyperparameters()}
        write_text_atomic(output_dir / RESULTS_NAME, json.dumps(document, indent=2) + "\n")
        if config.push_to:
            push_output(output_dir, config.push_to)
        cb.on_train_end(result)
    return result


# ====================================================================== pieces of the run
def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``total_steps``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict]:
    """Decay only weight matrices and kernels: not norms, biases, pos_embed or filters.

    Decaying the global filters shrinks them toward an all-pass-nothing filter; decaying norm
    gains and biases has no regularizing meaning (docs/training.md).
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or name.endswith(("pos_embed", "complex_weight", "gamma"))
        (no_decay if skip and not decay_all else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@torch.no_grad()
def _evaluate_counts(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[float, float, float, int]:
    """Top-1, top-5 (fractions), mean cross-entropy and how many labelled images were scored,
    summed over every process's shard."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # correct@1, correct@5, loss sum, count
    for batch in loader:
        if not len(batch.labels):
            continue
        images = batch.images.to(device)
        labels = batch.labels.to(device)
        keep = labels >= 0
        if not bool(keep.any()):
            continue
        with autocast_context(device, precision):
            logits = model(images[keep]).float()
        labels = labels[keep]
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top == labels[:, None]
        totals[0] += hits[:, 0].sum().item()
        totals[1] += hits.any(dim=1).sum().item()
        totals[2] += F.cross_entropy(logits, labels, reduction="sum").item()
        totals[3] += len(labels)
    distributed.all_reduce_sum(totals)
    count = max(totals[3].item(), 1)
    return (totals[0].item() / count, totals[1].item() / count, totals[2].item() / count,
            int(totals[3].item()))  # fmt: skip


class ResumableSampler(DistributedSampler):
    """:class:`DistributedSampler` that yields ``(epoch, index)`` and can skip seen samples.

    The order of an epoch depends only on ``(seed, epoch)``, so skipping the samples a
    checkpoint already consumed reproduces the rest of the epoch exactly.
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:  # type: ignore[override]
        super().set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.skip :]
        return iter([(self.epoch, index) for index in indices])


class SampledSource:
    """Training batches from a map-style split: :class:`ResumableSampler` order."""

    def __init__(self, data: ImageDataset, transform: Any, config: TrainConfig,
                 dist: distributed.DistInfo, device: torch.device) -> None:  # fmt: skip
        self.dataset = EpochSampleDataset(data, transform)
        self.sampler = ResumableSampler(
            self.dataset, num_replicas=dist.world_size, rank=dist.rank, seed=config.seed
        )
        self.loader = _loader(self.dataset, self.sampler, config, device)
        self.batch_size = config.batch_size

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def num_samples(self) -> int:
        return len(self.dataset)

    def batches(self, epoch: int, step_in_epoch: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch, skip_samples=step_in_epoch * self.batch_size)
        return iter(self.loader)

    def state(self) -> None:
        return None  # (epoch, step_in_epoch) say where the sampler is

    def resume(self, saved: Any, epoch: int, step_in_epoch: int, path: Path) -> None:
        pass


class StreamSource:
    """Training batches from a stream (``--streaming``): :class:`TrainStream` in the workers.

    Keeps this process's :class:`StreamPosition` (saved in checkpoints). With several
    processes an epoch ends for all of them when the first one's stream ends: streams split
    by node need not be equally long, and a process without a batch cannot join the step.
    """

    def __init__(self, data: ImageDataset, transform: Any, config: TrainConfig,
                 dist: distributed.DistInfo, device: torch.device) -> None:  # fmt: skip
        self.stream = TrainStream(
            data, transform, batch_size=config.batch_size, seed=config.seed, rank=dist.rank,
            world_size=dist.world_size, buffer_size=config.shuffle_buffer,
        )  # fmt: skip
        self.num_examples = split_num_examples(data)
        self.rank, self.world_size, self.batch_size = dist.rank, dist.world_size, config.batch_size
        # datasets gives each worker whole shards: more workers than shards would idle.
        self.workers = max(1, min(config.num_workers, self.stream.num_shards))
        self.loader = _loader(
            self.stream, None, config, device,
            batch_size=None, num_workers=min(config.num_workers, self.workers),
            collate_fn=pass_through,
        )  # fmt: skip
        self.position = StreamPosition.start(0, self.workers)
        self.resumed: StreamPosition | None = None

    def steps_per_epoch(self) -> int | None:
        if self.num_examples is None:
            return None
        return math.ceil(math.ceil(self.num_examples / self.world_size) / self.batch_size)

    def num_samples(self) -> int | None:
        return self.num_examples

    def state(self) -> dict[str, Any]:
        return self.position.to_dict()

    def resume(self, saved: Any, epoch: int, step_in_epoch: int, path: Path) -> None:
        if step_in_epoch == 0:
            return  # an epoch boundary: the next epoch's stream starts from its beginning
        mine = saved[self.rank] if isinstance(saved, list) and self.rank < len(saved) else None
        position = StreamPosition.from_dict(mine) if mine else None
        if (
            position is None
            or len(saved) != self.world_size
            or position.workers != self.workers
            or position.epoch != epoch
        ):
            raise ckpt.CheckpointError(
                f"--resume: {path.name} stopped in the middle of a streamed epoch with another "
                f"number of processes or --num-workers; resume with the same ones as that run"
            )
        self.resumed = position

    def batches(self, epoch: int, step_in_epoch: int) -> Iterator[Batch]:
        resumed, self.resumed = self.resumed, None
        self.position = (
            resumed
            if resumed is not None and step_in_epoch > 0
            else StreamPosition.start(epoch, self.workers)
        )
        self.stream.begin(self.position)
        for batch in self.loader:
            if batch is None:
                continue  # a worker's placeholder that restores the round-robin order
            if not _every_process_has_a_batch(True, self.world_size):
                return
            self.position.advance(batch.worker, batch.rows)
            yield batch
        _every_process_has_a_batch(False, self.world_size)


def _every_process_has_a_batch(mine: bool, world_size: int) -> bool:
    if world_size == 1:
        return mine
    flags = torch.tensor([float(mine)])
    distributed.all_reduce_sum(flags)
    return int(flags.item()) == world_size


def _eval_loader(data: ImageDataset, transform: Any, class_names: list[str],
                 config: TrainConfig, dist: distributed.DistInfo,
                 device: torch.device) -> DataLoader:  # fmt: skip
    """Evaluation batches: this process's share of the eval split (map-style or streamed)."""
    label_map = _label_map(data, class_names)
    if not config.streaming:
        dataset = TorchImageDataset(data, transform, label_map)
        return _loader(
            dataset, list(range(dist.rank, len(dataset), dist.world_size)), config, device
        )
    if dist.world_size > 1:
        from datasets.distributed import split_dataset_by_node

        data = dataclasses.replace(
            data,
            dataset=split_dataset_by_node(data.dataset, rank=dist.rank, world_size=dist.world_size),
        )
    stream = TorchIterableImageDataset(data, transform, label_map)
    return _loader(stream, None, config, device,
                   num_workers=max(0, min(config.num_workers, stream.num_shards)))  # fmt: skip


def _loader(
    dataset: Any,
    sampler: Any,
    config: TrainConfig,
    device: torch.device,
    *,
    batch_size: int | None | str = "config",
    num_workers: int | None = None,
    collate_fn: Any = collate_skipping_failures,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=config.batch_size if batch_size == "config" else batch_size,
        sampler=sampler,
        num_workers=config.num_workers if num_workers is None else num_workers,
        collate_fn=collate_fn,
        # Our own generator: building an iterator must not consume the global RNG, or the
        # drop-path masks after a resume would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(config.seed),
        worker_init_fn=_ignore_sigint,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def _ignore_sigint(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which checkpoints then stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopFlag:
    """Ctrl-C asks the loop to stop at the next step boundary (a second one stops at once)."""

    def __init__(self) -> None:
        self.requested = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stopping after this step (Ctrl-C again to abort without a checkpoint)")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class MetricsWriter:
    """Metrics as JSON lines in the output folder (and TensorBoard when it is installed)."""

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = output_dir / METRICS_NAME
        self.handle = None
        self.tensorboard = None
        if enabled:
            output_dir.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
            except ImportError:
                pass

    def write(self, row: dict[str, Any]) -> None:
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

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _truncate_metrics(path: Path, step: int) -> None:
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


# ====================================================================== data
def prepare_data(
    config: TrainConfig, dist: distributed.DistInfo
) -> tuple[ImageDataset, ImageDataset | None, list[str]]:
    """The train and eval splits and the class names, with the pre-flight data checks."""
    # Rank 0 first: concurrent first loads of an image folder would race on the cache.
    if not dist.is_main:
        distributed.barrier()
    splits = load_splits(
        config.dataset,
        dataset_config=config.dataset_config,
        streaming=config.streaming,
        num_shards=STREAM_SHARDS if config.streaming else None,
    )
    if dist.is_main:
        distributed.barrier()
    names = list(splits)
    train_name = choose_split(names, config.train_split, TRAIN_SPLITS)
    if config.eval_split is not None:
        eval_name: str | None = choose_split(names, config.eval_split, EVAL_SPLITS)
    else:
        eval_name = next((s for s in EVAL_SPLITS if s in names and s != train_name), None)
        if eval_name is None:
            logger.warning(
                "%s has no validation/test split: no evaluation, the last epoch is kept",
                config.dataset,
            )
    train = _image_dataset(splits, train_name, config)
    if train.label_column is None:
        raise DatasetError(
            f"{config.dataset} [{train_name}] has no label column (no ClassLabel feature, no "
            "'label' column): pass --label-column"
        )
    if _is_empty(train):
        raise DatasetError(f"{config.dataset}: the {train_name!r} split is empty")
    if config.streaming:
        if train.class_names is None:
            raise DatasetError(
                f"{config.dataset} [{train_name}]: --streaming needs a ClassLabel label column "
                "(the classes cannot be listed without reading the whole stream)"
            )
        if config.max_steps is None and split_num_examples(train) is None:
            raise UsageError(
                f"--streaming: the size of {config.dataset} [{train_name}] is unknown, so the "
                "learning-rate schedule has no end: pass --max-steps"
            )
    class_names = train.class_names or _class_names_from_values(train)
    if len(class_names) < 2:
        raise DatasetError(
            f"{config.dataset} [{train_name}] has {len(class_names)} class: a classifier "
            "needs at least 2"
        )
    evaluation = None
    if eval_name is not None:
        evaluation = _image_dataset(splits, eval_name, config)
        if evaluation.label_column is None:
            raise DatasetError(f"{config.dataset} [{eval_name}] has no label column")
        if _is_empty(evaluation):
            raise DatasetError(f"{config.dataset}: the {eval_name!r} split is empty")
    return train, evaluation, class_names


def _image_dataset(splits: Any, name: str, config: TrainConfig) -> ImageDataset:
    data = splits[name]
    image_col, label_col, class_names = find_columns(
        data.features, config.image_column, config.label_column
    )
    return ImageDataset(data, config.dataset, name, image_col, label_col, class_names,
                        streaming=config.streaming)  # fmt: skip


def _is_empty(data: ImageDataset) -> bool:
    if not data.streaming:
        return len(data) == 0
    if split_num_examples(data) is not None:
        return False
    return next(iter(data.dataset.take(1)), None) is None  # reads one row of the stream


def _class_names_from_values(data: ImageDataset) -> list[str]:
    values = sorted({int(v) for v in data.dataset[data.label_column] if v is not None})
    if values and values[0] < 0:
        raise DatasetError(f"label column {data.label_column!r} holds negative labels")
    return [str(i) for i in range(values[-1] + 1)] if values else []


def _label_map(data: ImageDataset, class_names: list[str]) -> dict[int, int] | None:
    """Map another split's label ids onto the training classes by name."""
    if data.class_names is None or data.class_names == class_names:
        return None
    position = {name: i for i, name in enumerate(class_names)}
    return {i: position.get(name, -1) for i, name in enumerate(data.class_names)}


# ====================================================================== model
def build_model(config: TrainConfig, class_names: list[str]) -> GFNet:
    """The starting point: fresh weights (``from_scratch``) or MODEL's with a new head."""
    changes: dict[str, Any] = {"num_classes": len(class_names), "class_names": list(class_names)}
    if config.img_size is not None:
        changes["img_size"] = config.img_size
    if config.drop_path is not None:
        changes["drop_path_rate"] = config.drop_path
    if config.crop_pct is not None:
        changes["crop_pct"] = config.crop_pct
    if config.from_scratch:
        arch: dict[str, Any] = {}
        if config.patch_size is not None:
            arch["patch_size"] = config.patch_size
        if config.embed_dim is not None:
            arch["embed_dim"] = config.embed_dim
        if config.depth is not None:
            arch["depth"] = config.depth
        source = resolve_config(config.model)  # config.json only: no weights downloaded
        if arch:
            changes["architecture"] = None
        return GFNet(source.replace(**arch, **changes))
    if any(v is not None for v in (config.patch_size, config.embed_dim, config.depth)):
        raise UsageError(
            "--patch-size/--embed-dim/--depth change the architecture: add --from-scratch"
        )
    pretrained = load_model(config.model, img_size=config.img_size)
    head_free = {k: v for k, v in changes.items() if k not in ("num_classes", "class_names")}
    model = GFNet(pretrained.config.replace(**head_free))
    model.load_state_dict(pretrained.state_dict())
    model.reset_classifier(len(class_names), list(class_names))
    return model


# ====================================================================== checks, RNG, outputs
def _check_recipe(config: TrainConfig, device: torch.device) -> None:
    check_precision(device, config.precision)  # fp16 needs a GPU, bf16 a GPU that has it
    if config.epochs < 1 or config.batch_size < 1:
        raise UsageError("--epochs and --batch-size must be at least 1")
    if config.lr <= 0 or config.weight_decay < 0 or not 0 <= config.label_smoothing < 1:
        raise UsageError("--lr must be positive, --weight-decay >= 0, --label-smoothing in [0, 1)")
    if config.shuffle_buffer < 1 or (config.max_steps is not None and config.max_steps < 1):
        raise UsageError("--shuffle-buffer and --max-steps must be at least 1")
    if not 0 < config.crop_scale[0] <= config.crop_scale[1] <= 1:
        raise UsageError(f"--crop-scale must satisfy 0 < min <= max <= 1, got {config.crop_scale}")
    if config.num_workers < 0:
        raise UsageError(f"--num-workers must be 0 or more, got {config.num_workers}")
    if not all(math.isfinite(a) and a >= 0 for a in (config.mixup, config.cutmix)):
        raise UsageError(
            f"--mixup and --cutmix must be >= 0 (0: off), got {config.mixup} and {config.cutmix}"
        )
    if not (0 <= config.mix_prob <= 1 and 0 <= config.mix_switch_prob <= 1):
        raise UsageError(
            f"--mix-prob and --mix-switch-prob must be in [0, 1], got {config.mix_prob} and "
            f"{config.mix_switch_prob}"
        )
    if config.push_to:  # refused now, not after hours of training
        from gfnet_cli.push import check_push_target

        check_push_target(config.push_to)


def _check_output_dir(output_dir: Path, config: TrainConfig) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {output_dir} is a file")
    if config.resume or config.overwrite or not output_dir.is_dir():
        if config.overwrite and not config.resume:
            for old in ckpt.list_checkpoints(output_dir / ckpt.CHECKPOINT_DIR):
                old.unlink(missing_ok=True)
            (output_dir / METRICS_NAME).unlink(missing_ok=True)
        return
    if any(output_dir.iterdir()):
        raise UsageError(
            f"--output-dir {output_dir} is not empty: pass --resume to continue its run, "
            "--overwrite to start over, or choose another folder"
        )


def _check_same_run(state: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    saved = json.loads(state.get("identity", "{}"))
    if (
        saved.get("model_config") != identity["model_config"]
        or saved.get("dataset") != identity["dataset"]
    ):
        raise ckpt.CheckpointError(
            f"--resume: {path} belongs to another run (model {saved.get('model')!r} on "
            f"dataset {saved.get('dataset')!r}); use another --output-dir for this one"
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    return ckpt.capture_rng_state()


def restore_rng(state: dict[str, Any] | None, fallback_seed: int) -> None:
    if state is None:
        logger.warning("checkpoint has no RNG state for this process; seeding afresh")
        seed_everything(fallback_seed)
    else:
        ckpt.restore_rng_state(state)


def training_card(model: GFNet, config: TrainConfig, stats: EpochStats) -> str:
    """The model card, with how the model was trained and the epoch's evaluation."""
    from gfnet_cli.card import model_card

    eval_results = (
        {"top1": stats.top1, "top5": stats.top5, "loss": stats.eval_loss, "epoch": stats.epoch}
        if stats.top1 is not None
        else None
    )
    return model_card(
        model.config,
        num_params=model.num_params,
        base_model=None if config.from_scratch else config.model,
        dataset=config.dataset,
        hyperparameters=config.hyperparameters(),
        eval_results=eval_results,
    )


def push_output(output_dir: Path, repo_id: str) -> None:
    """Push the MODEL files (not checkpoints) with ``gfnet_cli.push.push_folder``."""
    from gfnet_cli.push import push_folder

    with tempfile.TemporaryDirectory(prefix="gfnet-push-") as staging:
        for name in ("config.json", "model.safetensors", "README.md", RESULTS_NAME):
            if (output_dir / name).is_file():
                shutil.copy2(output_dir / name, Path(staging) / name)
        push_folder(Path(staging), repo_id)


__all__ = [
    "TrainCallbacks",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingInterruptedError",
    "build_model",
    "finetune",
    "lr_at",
    "param_groups",
]
