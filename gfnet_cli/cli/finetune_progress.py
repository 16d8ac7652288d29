"""``gfnet finetune``'s display: a progress bar and one line per epoch on stderr.

Apart from finetune_cmd.py because it subclasses the library's :class:`TrainCallbacks` and so
imports torch; the command imports it only when it runs, keeping ``--help`` instant.
"""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gfnet_cli.cli._common import stderr
from gfnet_cli.engine.train import EpochStats, TrainCallbacks, TrainResult


class RichCallbacks(TrainCallbacks):
    """A progress bar on stderr (epoch, step, loss, lr, img/s, ETA) and a line per epoch."""

    def __init__(self, show_progress: bool) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.show_progress = show_progress
        self.last_refresh = 0.0

    def on_train_begin(self, total_steps: int, start_step: int, steps_per_epoch: int) -> None:
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
        if "mean_iou" in stats.metrics:
            evaluation = (f"val mIoU {stats.metrics['mean_iou']:6.2%}  pixel accuracy "
                          f"{stats.metrics['overall_accuracy']:6.2%}")  # fmt: skip
        elif stats.top1 is not None:
            evaluation = f"val top-1 {stats.top1:6.2%}  top-5 {stats.top5:6.2%}"
            if stats.ema_top1 is not None:  # both were evaluated: say which weights these are
                evaluation += f" ({'EMA' if stats.weights == 'ema' else 'raw'}; "
                evaluation += f"raw {stats.raw_top1:.2%}, EMA {stats.ema_top1:.2%})"
        else:
            evaluation = "no validation split"
        mark = "  *best" if stats.is_best and stats.metrics else ""
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
        """Stop the bar (also when training fails); safe to call twice."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
