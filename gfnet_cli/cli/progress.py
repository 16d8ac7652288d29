"""Progress bars for commands whose library function reports through a callback.

Library functions stay silent and take ``progress(completed_so_far, total_or_None)``; a
command that wants a bar passes a :class:`ProgressBar`, which draws on stderr (stdout stays
for results and ``--json``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gfnet_cli.cli._common import stderr

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


class ProgressBar:
    """A ``progress(completed, total)`` callback drawing a rich bar with ETA.

    The bar appears at the first call, so nothing is drawn for work that never reports (or
    fails before it starts). ``total=None`` (a stream of unknown length) draws a pulsing bar.
    """

    def __init__(self, label: str, unit: str = "", console: Console | None = None) -> None:
        self.label = label
        self.unit = unit
        self.console = console or stderr
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, completed: int, total: int | None) -> None:
        if self._bar is None or self._task is None:
            self._bar, self._task = self._start(total)
        self._bar.update(self._task, completed=completed, total=total)

    def _start(self, total: int | None) -> tuple[Progress, TaskID]:
        # rich.progress loads only when work starts: --help never pays for it.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns: list[Any] = [TextColumn(self.label), BarColumn(), MofNCompleteColumn()]
        if self.unit:
            columns.append(TextColumn(self.unit))
        columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        bar = Progress(*columns, console=self.console)
        bar.start()
        return bar, bar.add_task(self.label, total=total)

    def close(self) -> None:
        """Stop drawing (the finished bar stays on screen); safe to call twice."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def progress_bar(
    label: str, unit: str = "", *, enabled: bool = True
) -> Iterator[ProgressBar | None]:
    """A :class:`ProgressBar` to pass as ``progress=``, or ``None`` (silent) when disabled."""
    if not enabled:
        yield None
        return
    with ProgressBar(label, unit) as bar:
        yield bar
