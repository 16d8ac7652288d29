"""The options several commands share, declared once: one flag, one help text each.

Commands annotate a parameter with one of these aliases and give its default with ``=``
(none: required), so a flag reads the same in every ``gfnet CMD --help``.

This module and every command module import neither torch, datasets nor huggingface_hub:
``gfnet --help`` and ``gfnet CMD --help`` must start instantly (docs/benchmarks.md). The
constants help texts and defaults need live here for that reason; the library modules keep
their own, and tests/test_cli.py asserts the two agree.
"""

from __future__ import annotations

from typing import Annotated

import typer

# Defaults shown in --help; the library's copies are named in the comments.
DEFAULT_MODEL = "gfnet-xs"  # gfnet_cli.commands.predict.DEFAULT_MODEL
BASELINES = ("vit", "resmlp")  # gfnet_cli.commands.profile.BASELINES
DEFAULT_CROP_SCALE = (0.6, 1.0)  # gfnet_cli.data.augment.DEFAULT_CROP_SCALE
DEFAULT_SHUFFLE_BUFFER = 1000  # gfnet_cli.data.streaming.DEFAULT_SHUFFLE_BUFFER
DEFAULT_PREPARE_TIMEOUT = 60.0  # gfnet_cli.engine.train.config.DEFAULT_PREPARE_TIMEOUT

MODEL_HELP = "MODEL: a local folder, a Hub repo id (org/name or org/name@rev), or a zoo name."

ModelArgument = Annotated[str, typer.Argument(help=MODEL_HELP)]
ModelOption = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
RevisionOption = Annotated[
    str | None, typer.Option("--revision", help="Branch, tag or commit of a Hub MODEL.")
]

DatasetOption = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="DATASET: a Hub dataset id, an image folder, or a save_to_disk folder.",
    ),
]
DatasetConfigOption = Annotated[
    str | None, typer.Option("--dataset-config", help="Configuration of a Hub DATASET.")
]
ImageColumnOption = Annotated[
    str | None, typer.Option("--image-column", help="The image column (default: from features).")
]
MaskColumnOption = Annotated[
    str | None,
    typer.Option("--mask-column", help="Segmentation: the mask column (default: by name)."),
]
ReduceLabelsOption = Annotated[
    bool | None,
    typer.Option(
        "--reduce-labels/--no-reduce-labels",
        help="Segmentation: mask 0 ignored, 1..N become 0..N-1 (ADE20K); default: the model's.",
    ),
]
LabelColumnOption = Annotated[
    str | None, typer.Option("--label-column", help="The label column (default: from features).")
]
StreamingOption = Annotated[
    bool, typer.Option("--streaming", help="Stream a Hub DATASET instead of downloading it.")
]
NumWorkersOption = Annotated[
    int | None,
    typer.Option("--num-workers", help="DataLoader worker processes decoding images."),
]

BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", "-b", help="Images per forward pass.")
]
ImgSizeOption = Annotated[
    int | None,
    typer.Option(
        "--img-size", help="Run the model at this resolution (default: MODEL's; weights resized)."
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
]
PrecisionOption = Annotated[
    str, typer.Option("--precision", help="fp32, bf16 or fp16 (autocast; fp16 needs a GPU).")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")
]
