"""``gfnet finetune``: train a GFNet on an image dataset (pretrained or from scratch)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from gfnet_cli.cli._common import State, emit_json, stderr, stdout
from gfnet_cli.cli.options import (
    DEFAULT_CROP_SCALE,
    DEFAULT_PREPARE_TIMEOUT,
    DEFAULT_SHUFFLE_BUFFER,
    DatasetConfigOption,
    DatasetOption,
    DeviceOption,
    ImageColumnOption,
    ImgSizeOption,
    JsonOption,
    LabelColumnOption,
    MaskColumnOption,
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


def _parse_pair(text: str) -> tuple[int, int]:
    try:
        long_side, short_side = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--resize-scale takes LONG,SHORT (e.g. 2048,512), got {text!r}") from None
    return long_side, short_side


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


RECIPE_NAMES = ("imagenet", "finetune-384", "transfer", "ade20k")  # gfnet_cli.engine.train.RECIPES

# CLI parameters that are not TrainConfig fields, or are under another name.
_NOT_CONFIG = {"ctx", "recipe", "as_json", "print_config", "no_augment", "compile_model",
               "lr_base_batch"}  # fmt: skip


def finetune_command(
    ctx: typer.Context,
    model: ModelOption,
    dataset: DatasetOption,
    output_dir: Path = typer.Option(..., "--output-dir", help="Where the model and logs go."),
    recipe: str = typer.Option(
        None, "--recipe", help=f"The authors' hyper-parameters: {', '.join(RECIPE_NAMES)}; "
        "flags given explicitly win.",
    ),  # fmt: skip
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved run as JSON and exit (reads no data)."
    ),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Fresh weights."),
    new_head: bool = typer.Option(
        False, "--new-head", help="A new classifier even when the classes are MODEL's."
    ),
    patch_size: int = typer.Option(None, "--patch-size", help="With --from-scratch: patch size."),
    embed_dim: str = typer.Option(None, "--embed-dim", help="With --from-scratch: width(s)."),
    depth: str = typer.Option(None, "--depth", help="With --from-scratch: depth(s)."),
    img_size: ImgSizeOption = None,
    crop_pct: float = typer.Option(None, "--crop-pct", help="Eval center-crop fraction."),
    epochs: int = typer.Option(10, "--epochs", help="Passes over the training split."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many steps."),
    batch_size: int = typer.Option(
        32, "--batch-size", help="Images per micro-batch per process."
    ),
    accumulate: int = typer.Option(
        1, "--accumulate", help="Micro-batches per optimizer step (gradient accumulation)."
    ),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate (AdamW)."),
    lr_base_batch: int = typer.Option(
        None, "--lr-base-batch", help="Scale --lr by global batch / N (recipes: 512; 0: off)."
    ),
    min_lr: float = typer.Option(1e-6, "--min-lr", help="Learning rate at the end of the cosine."),
    warmup_lr: float = typer.Option(0.0, "--warmup-lr", help="Learning rate warmup starts from."),
    weight_decay: float = typer.Option(
        1e-4, "--weight-decay", help="AdamW weight decay (not on norms, biases, filters)."
    ),
    decay_all: bool = typer.Option(
        False, "--decay-all", help="Decay norms, biases, pos_embed and filters too."
    ),
    warmup_epochs: float = typer.Option(
        1.0, "--warmup-epochs", help="Epochs of linear warmup before the cosine."
    ),
    label_smoothing: float = typer.Option(
        0.1, "--label-smoothing", help="Share of the target spread over the other classes."
    ),
    drop_path: float = typer.Option(None, "--drop-path", help="Default: the variant's rate."),
    eval_mode: bool = typer.Option(
        False, "--eval-mode/--no-eval-mode",
        help="Train with the model in eval mode: no drop path, no dropout (authors' fine-tuning).",
    ),  # fmt: skip
    clip_grad: float = typer.Option(1.0, "--clip-grad", help="Max gradient norm (0: off)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train on the eval transform."),
    crop_scale: str = typer.Option(
        ",".join(str(v) for v in DEFAULT_CROP_SCALE), "--crop-scale", help="Crop area MIN,MAX."
    ),
    hflip: float = typer.Option(0.5, "--hflip", help="Horizontal-flip probability."),
    randaugment: str = typer.Option(
        None, "--randaugment", help="timm RandAugment spec, e.g. rand-m9-mstd0.5-inc1."
    ),
    color_jitter: float = typer.Option(
        0.0, "--color-jitter", help="Brightness/contrast/saturation jitter (not with RandAugment)."
    ),
    reprob: float = typer.Option(0.0, "--reprob", help="Random-erasing probability (0: off)."),
    mixup: float = typer.Option(0.0, "--mixup", help="Mixup Beta(ALPHA, ALPHA) (0: off)."),
    cutmix: float = typer.Option(0.0, "--cutmix", help="Cutmix Beta(ALPHA, ALPHA) (0: off)."),
    mix_prob: float = typer.Option(1.0, "--mix-prob", help="Share of batches mixed."),
    mix_switch_prob: float = typer.Option(
        0.5, "--mix-switch-prob", help="With both on: chance of cutmix over mixup."
    ),
    ema: float = typer.Option(
        None, "--ema", help="Keep an EMA of the weights with this decay (e.g. 0.9998)."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seeds data order, augmentation and the held-out validation share."
    ),
    precision: PrecisionOption = "fp32",
    device: DeviceOption = "auto",
    compile_model: bool = typer.Option(
        False, "--compile", help="torch.compile the training step (compile time reported apart)."
    ),
    grad_checkpointing: bool = typer.Option(
        False, "--grad-checkpointing", help="Recompute activations in backward: less memory."
    ),
    deterministic: bool = typer.Option(
        False, "--deterministic",
        help="PyTorch's deterministic mode: bit-identical --resume on GPUs (slower).",
    ),  # fmt: skip
    filter_form: str = typer.Option(
        "auto", "--filter-form",
        help="Global filters in training: auto (the faster, measured on the first step), fft "
        "or matmul.",
    ),  # fmt: skip
    num_workers: NumWorkersOption = 2,
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="Steps (0: epochs)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a used folder."),
    push_to: str = typer.Option(None, "--push-to", help="Push the model to this Hub repo."),
    train_split: str = typer.Option(
        None, "--train-split", help="The split to train on (default: train or training)."
    ),
    eval_split: str = typer.Option(
        None, "--eval-split",
        help="The validation split that chooses the best epoch (default: validation, valid "
        "or val; else a share of train, see --validation-split-percentage).",
    ),  # fmt: skip
    test_split: str = typer.Option(
        None, "--test-split",
        help="The split reported at the end on the kept weights, never chosen on "
        "(default: test).",
    ),  # fmt: skip
    validation_split_percentage: float = typer.Option(
        10.0, "--validation-split-percentage",
        help="Without a validation split: % of each class of train held out (seeded) to "
        "choose the best epoch; 0: keep the last epoch.",
    ),  # fmt: skip
    dataset_config: DatasetConfigOption = None,
    image_column: ImageColumnOption = None,
    label_column: LabelColumnOption = None,
    task: str = typer.Option(
        "classification", "--task", help="classification, or segmentation (masks, mIoU)."
    ),
    mask_column: MaskColumnOption = None,
    reduce_labels: bool = typer.Option(
        False, "--reduce-labels/--no-reduce-labels",
        help="Segmentation: mask 0 ignored, 1..N become 0..N-1 (ADE20K; on in --recipe ade20k).",
    ),  # fmt: skip
    resize_scale: str = typer.Option(
        None, "--resize-scale",
        help="Segmentation: random resize's base LONG,SHORT (x 0.5-2.0; default: the crop).",
    ),  # fmt: skip
    poly_power: float = typer.Option(0.9, "--poly-power", help="--lr-schedule poly's power."),
    labels: str = typer.Option(
        None, "--labels",
        help="Segmentation class names: a file (JSON id->name, or one per line) or 'ade20k'.",
    ),  # fmt: skip
    num_classes: int = typer.Option(
        None, "--num-classes", help="Segmentation without class names: class_0..class_{N-1}."
    ),
    lr_schedule: str = typer.Option(
        "cosine", "--lr-schedule", help="After warmup: cosine, or poly (power 0.9; ade20k)."
    ),
    log_every: int = typer.Option(10, "--log-every", help="Steps between metrics lines."),
    streaming: StreamingOption = False,
    shuffle_buffer: int = typer.Option(
        DEFAULT_SHUFFLE_BUFFER, "--shuffle-buffer", help="With --streaming: rows shuffled at once."
    ),
    prepare_timeout: float = typer.Option(
        DEFAULT_PREPARE_TIMEOUT, "--prepare-timeout",
        help="Under torchrun: minutes the other processes wait for rank 0 to load the data.",
    ),  # fmt: skip
    as_json: JsonOption = False,
) -> None:
    """Fine-tune MODEL on DATASET (or train its architecture from scratch).

    Leaves a MODEL folder (the epoch with the best validation top-1, or mIoU for --task
    segmentation; the test split is reported apart) and train_results.json in --output-dir,
    checkpoints in --output-dir/checkpoints. --recipe sets the authors' hyper-parameters
    (flags given explicitly still win); --print-config shows what would run. Run under
    `torchrun` for several processes. --streaming (either task) needs the dataset's size or
    --max-steps; --resume a stream with the same --num-workers and process count.
    """
    from gfnet_cli.engine.train import TrainConfig, describe_run

    config = TrainConfig.from_recipe(recipe, **_explicit_values(ctx))
    if print_config:
        document = describe_run(config)
        if int(os.environ.get("RANK", "0")) == 0:
            emit_json(document)
        return
    result = _run(config)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return
    if as_json:
        emit_json(result.to_dict())
        return
    _print_summary(result)


def _explicit_values(ctx: typer.Context) -> dict[str, Any]:
    """The TrainConfig values the user gave (plus the required ones): a recipe fills the rest,
    our defaults without one."""
    given = {
        name: value
        for name, value in ctx.params.items()
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }
    values = {k: v for k, v in given.items() if k not in _NOT_CONFIG}
    if "no_augment" in given:
        values["augment"] = not given["no_augment"]
    if "compile_model" in given:
        values["compile"] = given["compile_model"]
    if "lr_base_batch" in given:
        values["lr_base_batch"] = given["lr_base_batch"] or None  # 0: no scaling
    if "resize_scale" in given:
        values["resize_scale"] = _parse_pair(given["resize_scale"])
    if "crop_scale" in given:
        values["crop_scale"] = _parse_scale(given["crop_scale"])
    for name in ("embed_dim", "depth"):
        if name in given:
            values[name] = _int_list(given[name], "--" + name.replace("_", "-"))
    return values


def _run(config: Any) -> Any:
    from gfnet_cli.cli.finetune_progress import RichCallbacks
    from gfnet_cli.engine.train import finetune

    callbacks = RichCallbacks(show_progress=not State.quiet and stderr.is_terminal)
    try:
        return finetune(config, callbacks)
    finally:
        callbacks.close()


def _print_summary(result: Any) -> None:
    if result.already_complete:  # the library's log line said so
        stdout.print(escape(str(result.output_dir)))
        return
    best = f"{result.best_top1:.2%}" if result.best_top1 is not None else "n/a"
    top5 = f"{result.best_top5:.2%}" if result.best_top5 is not None else "n/a"
    stdout.print(
        f"Trained {result.epochs} epochs ({result.global_step} steps, {result.world_size} "
        f"process{'es' if result.world_size > 1 else ''}) in {result.train_runtime_s:.1f} s"
    )
    weights = " (EMA weights)" if result.best_weights == "ema" else ""
    if result.validation_split is not None:
        chosen = f"epoch {result.best_epoch}, chosen on {escape(result.validation_split)}"
        if "mean_iou" in (result.best_metrics or {}):
            miou = result.best_metrics["mean_iou"]
            stdout.print(f"  best validation mIoU: {miou:.2%}  ({chosen}){weights}")
        else:
            stdout.print(f"  best validation top-1: {best}  top-5: {top5}  ({chosen}){weights}")
    else:
        stdout.print(f"  no validation split: the last epoch (epoch {result.best_epoch}) kept")
    if result.test is not None and "top1" in result.test:
        test, split = result.test, escape(str(result.test["split"]))
        stdout.print(f"  test top-1: {test['top1']:.2%}  top-5: {test['top5']:.2%}  "
                     f"({split}, measured once on the kept weights)")  # fmt: skip
    elif result.test is not None and "mean_iou" in result.test:
        split = escape(str(result.test["split"]))
        stdout.print(f"  test mIoU: {result.test['mean_iou']:.2%}  ({split}, measured once "
                     "on the kept weights)")
    head = "MODEL's, kept" if result.head == "kept" else "new"
    stdout.print(f"  classifier: {head}")
    if result.compile_time_s is not None:
        stdout.print(f"  compiling (first step): {result.compile_time_s:.1f} s")
    if result.resumed_from_step:
        stdout.print(f"  resumed from step {result.resumed_from_step}")
    stdout.print(escape(str(result.output_dir)))


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)
