"""``gfnet finetune``: train a GFNet on an image dataset (pretrained or from scratch)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from gfnet_cli.cli._common import State, emit_json, stderr, stdout
from gfnet_cli.cli.options import (
    DEFAULT_CROP_SCALE,
    DEFAULT_SHUFFLE_BUFFER,
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
    StreamingOption,
)
from gfnet_cli.errors import UsageError


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
    model: ModelOption,
    dataset: DatasetOption,
    output_dir: Path = typer.Option(..., "--output-dir", help="Where the model and logs go."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Fresh weights."),
    patch_size: int = typer.Option(None, "--patch-size", help="With --from-scratch: patch size."),
    embed_dim: str = typer.Option(None, "--embed-dim", help="With --from-scratch: width(s)."),
    depth: str = typer.Option(None, "--depth", help="With --from-scratch: depth(s)."),
    img_size: ImgSizeOption = None,
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
    precision: PrecisionOption = "fp32",
    device: DeviceOption = "auto",
    num_workers: NumWorkersOption = 2,
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="Steps (0: epochs)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a used folder."),
    push_to: str = typer.Option(None, "--push-to", help="Push the model to this Hub repo."),
    train_split: str = typer.Option(None, "--train-split"),
    eval_split: str = typer.Option(None, "--eval-split"),
    dataset_config: DatasetConfigOption = None,
    image_column: ImageColumnOption = None,
    label_column: LabelColumnOption = None,
    log_every: int = typer.Option(10, "--log-every", help="Steps between metrics lines."),
    streaming: StreamingOption = False,
    shuffle_buffer: int = typer.Option(
        DEFAULT_SHUFFLE_BUFFER, "--shuffle-buffer", help="With --streaming: rows shuffled at once."
    ),
    as_json: JsonOption = False,
) -> None:
    """Fine-tune MODEL on DATASET (or train its architecture from scratch).

    Leaves a MODEL folder (best epoch by eval top-1) and train_results.json in --output-dir,
    checkpoints in --output-dir/checkpoints. Run under `torchrun` for several processes.
    --streaming needs the dataset's size or --max-steps to plan the schedule.
    """
    from gfnet_cli.cli.finetune_progress import RichCallbacks
    from gfnet_cli.engine.train import TrainConfig, finetune

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
