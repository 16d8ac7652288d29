"""Fine-tuning (or training from scratch) a GFNet on an image-classification dataset.

:func:`finetune` takes a :class:`TrainConfig` and returns a :class:`TrainResult`; the loop
reads top to bottom in :mod:`~gfnet_cli.engine.train.loop`. Each concern has its module:

- ``config``   TrainConfig, the authors' recipes (RECIPES), every check (:func:`check_config`),
               the resolved run (:func:`describe_run`, ``--print-config``)
- ``data``     splits and their pre-flight checks, training sources (sampled, streamed), loaders
- ``model``    the starting model: MODEL's architecture from scratch, or its weights with its
               head (same classes) or a new one
- ``optim``    AdamW parameter groups, the warmup + cosine schedule, the fp16 loss scaler
- ``ema``      the exponential moving average of the weights
- ``lock``     one run per output folder
- ``state``    the run's parts and progress (Run, RunState), checkpoints, resume, Ctrl-C
- ``outputs``  callbacks, epoch stats and results, metrics.jsonl, the model card, push
- ``loop``     finetune(): set up, the step and the epoch as named calls

Exact resumption: the data order comes from a seeded sampler that can skip the batches already
seen (or, streaming, a per-worker stream position), each sample's augmentation from
``(seed, epoch, index)``, each batch's mixup/cutmix from ``(seed, rank, micro-step)``, the
moving average is checkpointed, and the global RNG (drop-path) is saved and restored; a run
killed at any moment and resumed ends with the same weights as one never interrupted
(docs/training.md).
"""

from gfnet_cli.engine.train.config import RECIPES, TrainConfig, describe_run
from gfnet_cli.engine.train.lock import OutputDirLockedError
from gfnet_cli.engine.train.loop import finetune
from gfnet_cli.engine.train.model import StartingModel, build_model
from gfnet_cli.engine.train.optim import lr_at, param_groups
from gfnet_cli.engine.train.outputs import EpochStats, TrainCallbacks, TrainResult
from gfnet_cli.engine.train.state import TrainingDivergedError, TrainingInterruptedError

__all__ = [
    "RECIPES",
    "EpochStats",
    "OutputDirLockedError",
    "StartingModel",
    "TrainCallbacks",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "TrainingInterruptedError",
    "build_model",
    "describe_run",
    "finetune",
    "lr_at",
    "param_groups",
]
