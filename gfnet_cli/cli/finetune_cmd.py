"""``gfnet finetune``: train a GFNet on an image dataset (pretrained or from scratch)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gfnet_cli.cli._common import State, emit_json, stderr, stdout
from gfnet_cli.data.augment import DEFAULT_CROP_SCALE
from gfnet_cli.data.streaming import DEFAULT_SHUFFLE_BUFFER
from gfnet_cli.engine.train import EpochStats, TrainCallbacks, TrainConfig, TrainResult, finetune
from gfnet_cli.errors import UsageError


class RichCallbacks(TrainCallbacks):
    """A progress bar on stderr (epoch, step, loss, lr, img/s, ETA) and a line per epoch."""

    def __init__(self, show_progress: bool) -> None:
        self.progress: Progress | None = None
        self.task = None
        self.show_progress = show_progress
        self.last_refresh = 0.0

    def on_train_begin(self, total_steps: int, start_step: int, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        if not self.show_progress:
            return
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[ips]} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=start_step, epoch="-", loss="-", lr="-", ips="-"
        )

    def on_step(self, step: int, epoch: int, loss: float, lr: float, ips: float) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        fields = {"epoch": epoch + 1, "loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "ips": f"{ips:.0f}"}
        self.progress.update(self.task, completed=step, refresh=now - self.last_refresh > 0.5,
                             **fields)  # fmt: skip
        self.last_refresh = now

    def on_epoch_end(self, stats: EpochStats) -> None:
        if stats.top1 is not None:
            evaluation = f"eval top-1 {stats.top1:6.2%}  top-5 {stats.top5:6.2%}"
        else:
            evaluation = "no eval split"
        mark = "  *best" if stats.is_best and stats.top1 is not None else ""
        line = (
            f"epoch {stats.epoch:>3}  step {stats.global_step:>6}  "
            f"train loss {stats.train_loss:.4f}  {evaluation}  {stats.images_per_second:.0f} img/s"
            f"{mark}"
        )
        if self.progress is not None:
            self.progress.console.print(line, highlight=False, soft_wrap=True)
        else:
            stderr.print(line, highlight=False, soft_wrap=True)

    def on_train_end(self, result: TrainResult) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _parse_scale(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--crop-scale takes MIN,MAX (e.g. 0.6,1), got {text!r}") from None
    return low, high


def _int_list(text: str | None, flag: str) -> int | list[int] | None:
    """``--embed-dim``/``--depth``: one integer, or 4 comma-separated ones (one per stage)."""
    if text is None:
        return None
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        numbers = []
    if not numbers:
        raise UsageError(f"{flag} takes an integer or 4 comma-separated integers, got {text!r}")
    return numbers[0] if len(numbers) == 1 else numbers


def finetune_command(
    model: str = typer.Option(..., "--model", "-m", help="MODEL: folder, Hub id or zoo name."),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="DATASET: Hub id, image folder, or save_to_disk folder."
    ),
    output_dir: Path = typer.Option(..., "--output-dir", help="Where the model and logs go."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Fresh weights."),
    patch_size: int = typer.Option(None, "--patch-size", help="With --from-scratch: patch size."),
    embed_dim: str = typer.Option(None, "--embed-dim", help="With --from-scratch: width(s)."),
    depth: str = typer.Option(None, "--depth", help="With --from-scratch: depth(s)."),
    img_size: int = typer.Option(None, "--img-size", help="Training resolution (default MODEL's)."),
    crop_pct: float = typer.Option(None, "--crop-pct", help="Eval center-crop fraction."),
    epochs: int = typer.Option(10, "--epochs"),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many steps."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per step per process."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate (AdamW)."),
    min_lr: float = typer.Option(1e-6, "--min-lr", help="Learning rate at the end of the cosine."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    decay_all: bool = typer.Option(
        False, "--decay-all", help="Decay norms, biases, pos_embed and filters too."
    ),
    warmup_epochs: float = typer.Option(1.0, "--warmup-epochs"),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing"),
    drop_path: float = typer.Option(None, "--drop-path", help="Default: the variant's rate."),
    clip_grad: float = typer.Option(1.0, "--clip-grad", help="Max gradient norm (0: off)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train on the eval transform."),
    crop_scale: str = typer.Option(
        ",".join(str(v) for v in DEFAULT_CROP_SCALE), "--crop-scale", help="Crop area MIN,MAX."
    ),
    hflip: float = typer.Option(0.5, "--hflip", help="Horizontal-flip probability."),
    mixup: float = typer.Option(0.0, "--mixup", help="Mixup Beta(ALPHA, ALPHA) (0: off)."),
    cutmix: float = typer.Option(0.0, "--cutmix", help="Cutmix Beta(ALPHA, ALPHA) (0: off)."),
    mix_prob: float = typer.Option(1.0, "--mix-prob", help="Share of batches mixed."),
    mix_switch_prob: float = typer.Option(
        0.5, "--mix-switch-prob", help="With both on: chance of cutmix over mixup."
    ),
    seed: int = typer.Option(0, "--seed"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    num_workers: int = typer.Option(2, "--num-workers", help="DataLoader worker processes."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="Steps (0: epochs)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a used folder."),
    push_to: str = typer.Option(None, "--push-to", help="Push the model to this Hub repo."),
    train_split: str = typer.Option(None, "--train-split"),
    eval_split: str = typer.Option(None, "--eval-split"),
    dataset_config: str = typer.Option(None, "--dataset-config"),
    image_column: str = typer.Option(None, "--image-column"),
    label_column: str = typer.Option(None, "--label-column"),
    log_every: int = typer.Option(10, "--log-every", help="Steps between metrics lines."),
    streaming: bool = typer.Option(
        False,
        "--streaming",
        help="Stream DATASET instead of downloading it (needs its size or --max-steps).",
    ),
    shuffle_buffer: int = typer.Option(
        DEFAULT_SHUFFLE_BUFFER, "--shuffle-buffer", help="With --streaming: rows shuffled at once."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print train_results as JSON."),
) -> None:
    """Fine-tune MODEL on DATASET (or train its architecture from scratch).

    Leaves a MODEL folder (best epoch by eval top-1) and train_results.json in --output-dir,
    checkpoints in --output-dir/checkpoints. Run under `torchrun` for several processes.
    """
    config = TrainConfig(
        model=model, dataset=dataset, output_dir=output_dir, from_scratch=from_scratch,
        patch_size=patch_size, embed_dim=_int_list(embed_dim, "--embed-dim"),
        depth=_int_list(depth, "--depth"), img_size=img_size,
        crop_pct=crop_pct, epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
        min_lr=min_lr, weight_decay=weight_decay, decay_all=decay_all,
        warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, drop_path=drop_path,
        clip_grad=clip_grad, augment=not no_augment, crop_scale=_parse_scale(crop_scale),
        hflip=hflip, mixup=mixup, cutmix=cutmix, mix_prob=mix_prob,
        mix_switch_prob=mix_switch_prob, seed=seed, precision=precision, device=device,
        num_workers=num_workers,
        checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite, push_to=push_to,
        train_split=train_split, eval_split=eval_split, dataset_config=dataset_config,
        image_column=image_column, label_column=label_column, log_every=log_every,
        streaming=streaming, shuffle_buffer=shuffle_buffer,
    )  # fmt: skip
    callbacks = RichCallbacks(show_progress=not State.quiet and stderr.is_terminal)
    try:
        result = finetune(config, callbacks)
    finally:
        callbacks.close()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return
    if as_json:
        emit_json(result.to_dict())
        return
    best = f"{result.best_top1:.2%}" if result.best_top1 is not None else "n/a"
    top5 = f"{result.best_top5:.2%}" if result.best_top5 is not None else "n/a"
    stdout.print(
        f"Trained {result.epochs} epochs ({result.global_step} steps, {result.world_size} "
        f"process{'es' if result.world_size > 1 else ''}) in {result.train_runtime_s:.1f} s"
    )
    stdout.print(f"  best eval top-1: {best}  top-5: {top5}  (epoch {result.best_epoch})")
    if result.resumed_from_step:
        stdout.print(f"  resumed from step {result.resumed_from_step}")
    stdout.print(str(result.output_dir))


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)
