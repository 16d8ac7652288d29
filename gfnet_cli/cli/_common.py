"""What every command shares: consoles, JSON output, logging set-up."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

if TYPE_CHECKING:
    from typer._click import core as click

#: columns for results when no terminal says how many (a CI log, a captured subprocess)
PIPED_WIDTH = 200


def _results_width() -> int | None:
    """Without a terminal on any standard stream and without ``COLUMNS``, rich lays tables out
    in 80 columns and cuts their cells (``26.11M`` printed as ``26…``): results get room
    instead. In a terminal, the terminal's width, as rich finds it."""
    if "COLUMNS" in os.environ:
        return None
    for descriptor in (0, 1, 2):
        try:
            os.get_terminal_size(descriptor)
        except (OSError, ValueError):
            continue
        return None
    return PIPED_WIDTH


# Results go to stdout; progress, logs and warnings to stderr (``--json`` keeps stdout clean).
stdout = Console(highlight=False, soft_wrap=True, width=_results_width())
stderr = Console(stderr=True, highlight=False)


class State:
    """What the global options and the invoked command decide for this run."""

    debug = False
    quiet = False
    command: click.Command | None = None  # the subcommand being run, for its flags


def report_unreadable(image: str, reason: str) -> None:
    """One stderr line per input that could not be read: the reason survives ``> out.txt``
    and ``--json`` (whose stdout keeps the error entry too)."""
    stderr.print(f"[yellow]skipped[/yellow] {escape(image)}: {escape(reason)}", soft_wrap=True)


def emit_json(document: Any) -> None:
    """Write one JSON document to stdout, nothing else."""
    sys.stdout.write(json.dumps(document, indent=2, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class OneLineHandler(logging.Handler):
    """A log record as one stderr line (``warning: ...``), never wrapped into columns, drawn
    through the console so it lands above a live progress bar instead of through it."""

    STYLES = {"DEBUG": "dim", "INFO": "cyan", "WARNING": "yellow", "ERROR": "red"}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(self.format(record).split())
            level = record.levelname.lower()
            line = Text.assemble((f"{level}:", self.STYLES.get(record.levelname, "")), " ",
                                 message)  # fmt: skip
            stderr.print(line, soft_wrap=True, highlight=False)
        except Exception:  # a log line must never end the run
            self.handleError(record)


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Library logs (the ``gfnet_cli`` logger) go to stderr, at the level the flags ask."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = OneLineHandler()
    root = logging.getLogger("gfnet_cli")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
