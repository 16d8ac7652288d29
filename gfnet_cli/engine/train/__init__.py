"""Fine-tuning (or training from scratch) a GFNet on an image-classification dataset.

:func:`finetune` takes a :class:`TrainConfig` and returns a :class:`TrainResult`; the loop
reads top to bottom in :mod:`~gfnet_cli.engine.train.loop`. Each concern has its module:

- ``config``   TrainConfig, the recipe, and every check on it (:func:`check_config`)
- ``data``     splits and their pre-flight checks, training sources (sampled, streamed), loaders
- ``model``    the starting model: MODEL's architecture from scratch, or its weights + new head
- ``optim``    AdamW parameter groups, the warmup + cosine schedule, the fp16 loss scaler
- ``state``    the run's parts and progress (Run, RunState), checkpoints, resume, Ctrl-C
- ``outputs``  callbacks, epoch stats and results, metrics.jsonl, the model card, push
- ``loop``     finetune(): set up, the step and the epoch as named calls

Exact resumption: the data order comes from a seeded sampler that can skip the batches already
seen (or, streaming, a per-worker stream position), each sample's augmentation from
``(seed, epoch, index)``, each batch's mixup/cutmix from ``(seed, rank, step)``, and the global
RNG (drop-path) is saved and restored; a run killed at any moment and resumed ends with the
same weights as one never interrupted (docs/training.md).
"""

from gfnet_cli.engine.train.config import TrainConfig
from gfnet_cli.engine.train.loop import finetune
from gfnet_cli.engine.train.model import build_model
from gfnet_cli.engine.train.optim import lr_at, param_groups
from gfnet_cli.engine.train.outputs import EpochStats, TrainCallbacks, TrainResult
from gfnet_cli.engine.train.state import TrainingDivergedError, TrainingInterruptedError

__all__ = [
    "EpochStats",
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
