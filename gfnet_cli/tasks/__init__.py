"""Tasks: what differs between classification and the tasks beside it (docs/architecture.md).

Each task is one module defining a :class:`~gfnet_cli.tasks.base.Task`; :func:`get_task`
finds it by the name ``config.json`` records. Import from the submodules inside the package.
"""

from __future__ import annotations

from gfnet_cli.errors import UsageError
from gfnet_cli.tasks.base import Metric, MetricResult, Task
from gfnet_cli.tasks.classification import CLASSIFICATION
from gfnet_cli.tasks.segmentation import SEGMENTATION

TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFICATION, SEGMENTATION)}


def get_task(name: str | None) -> Task:
    """The task called ``name`` (``None``: classification, what older MODELs are)."""
    task = TASKS.get(name or CLASSIFICATION.name)
    if task is None:
        raise UsageError(f"task must be one of {', '.join(TASKS)}, got {name!r}", param="task")
    return task


__all__ = ["TASKS", "Metric", "MetricResult", "Task", "get_task"]
