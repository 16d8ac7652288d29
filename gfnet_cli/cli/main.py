"""Entry point of the ``gfnet`` command: global options, command registration, error policy.

Errors raised as :class:`gfnet_cli.errors.GFNetError` become one line on stderr and the
exit status docs/cli.md gives (2: unusable input, 1: anything else). No traceback is shown
unless ``--debug`` (or ``GFNET_DEBUG=1``). Library errors name Python parameters
(``batch_size``); the line printed names the flag the command declares (``--batch-size``).

Nothing imported here, nor by the command modules at import time, loads torch, datasets or
huggingface_hub: commands import the library when they run, so ``--help`` is instant.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

import typer
from rich.markup import escape
from typer.core import TyperCommand

from gfnet_cli import __version__
from gfnet_cli.cli import (
    convert_cmd,
    download_cmd,
    embed_cmd,
    evaluate_cmd,
    export_cmd,
    finetune_cmd,
    models_cmd,
    predict_cmd,
    profile_cmd,
    push_cmd,
    robustness_cmd,
    visualize_cmd,
)
from gfnet_cli.cli._common import State, setup_logging, stderr
from gfnet_cli.cli.help import GFNetCommand
from gfnet_cli.errors import GFNetError, first_line

try:  # recent typer releases vendor click; older ones use the click package
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

app = typer.Typer(
    name="gfnet",
    help="Use, fine-tune, profile and publish Global Filter Networks (GFNet).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"gfnet {__version__}\n")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail to stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log only warnings and errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    State.debug = debug or os.environ.get("GFNET_DEBUG") == "1"
    State.quiet = quiet
    if ctx.invoked_subcommand is not None:  # its flags name library parameters in errors
        State.command = getattr(ctx.command, "get_command", lambda *_: None)(
            ctx, ctx.invoked_subcommand
        )
    setup_logging(verbose=verbose, quiet=quiet)


_COMMANDS = (
    models_cmd,
    convert_cmd,
    download_cmd,
    predict_cmd,
    embed_cmd,
    evaluate_cmd,
    finetune_cmd,
    profile_cmd,
    push_cmd,
    visualize_cmd,
    robustness_cmd,
    export_cmd,
)
for _module in _COMMANDS:
    _module.register(app)
for _info in app.registered_commands:  # every command's help reads the same way
    if _info.cls in (None, TyperCommand):
        _info.cls = GFNetCommand


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors become one line and an exit status, never a traceback."""
    args = global_flags_first(list(sys.argv[1:] if argv is None else argv))
    State.debug = os.environ.get("GFNET_DEBUG") == "1" or "--debug" in args
    State.command = None
    try:
        # Not standalone: click's own usage errors (a boxed, multi-line message) and its
        # "Aborted!" on Ctrl-C then follow the same one-line policy as ours.
        code = app(args=args, prog_name="gfnet", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:  # plain `gfnet`: the help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except (Exception, KeyboardInterrupt) as exc:
        _fail(*_describe(exc))
    if code == 130:  # typer turns Ctrl-C into a silent exit 130
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def global_flags_first(args: list[str]) -> list[str]:
    """``gfnet predict x.jpg --debug`` works as ``gfnet --debug predict x.jpg``: ``--debug`` is
    the flag people add to a failing command line, at its end (not after ``--``)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    rest = [arg for arg in args[:end] if arg != "--debug"]
    return ["--debug", *rest, *args[end:]]


def _describe(exc: BaseException) -> tuple[str, int]:
    """The one line and the exit status for an error; re-raises it under ``--debug``."""
    if isinstance(exc, click_exceptions.UsageError):
        path = exc.ctx.command_path if exc.ctx is not None else "gfnet"
        return f"{' '.join(exc.format_message().split())} (see {path} --help)", 2
    if isinstance(exc, click_exceptions.ClickException):
        return " ".join(exc.format_message().split()), exc.exit_code
    if isinstance(exc, (typer.Abort, KeyboardInterrupt)):
        return "interrupted", 130
    if State.debug:
        raise exc
    if isinstance(exc, GFNetError):
        return with_flags(str(exc), exc.params, State.command), exc.exit_code
    if isinstance(exc, MemoryError):
        return "out of memory: try a smaller --batch-size or --img-size", 1
    # the last line of defence: never a traceback without --debug
    logging.getLogger("gfnet_cli").debug("unexpected error", exc_info=exc)
    message = first_line(exc) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message} (run with --debug for the traceback)", 1


def flag_for(param: str, command: object) -> str | None:
    """The long flag ``command`` declares for the Python parameter ``param``, if any.

    Matched by the CLI parameter's name (``batch_size``), then by flag spelling
    (``compile`` -> ``--compile``), so a library parameter maps to the option the user typed.
    """
    declared = [
        (p.name, [opt for opt in p.opts if opt.startswith("--")])
        for p in getattr(command, "params", ())
    ]
    spelled = "--" + param.replace("_", "-")
    for name, flags in declared:
        if flags and name == param:
            return flags[0]
    for _, flags in declared:
        if spelled in flags:
            return spelled
    for unit in ("_mb", "_s"):  # memory_limit_mb -> --memory-limit
        if param.endswith(unit):
            return flag_for(param.removesuffix(unit), command)
    return None


def with_flags(message: str, params: Sequence[str], command: object) -> str:
    """``message`` with each whole word in ``params`` written as the command's flag for it.

    ``batch_size must be at least 1`` -> ``--batch-size must be at least 1``; a word already
    written as a flag (``--batch-size``) or part of a longer one (``device-side``) is left alone.
    """
    for param in params:
        flag = flag_for(param, command)
        if flag is not None:
            message = re.sub(rf"(?<![\w-]){re.escape(param)}(?![\w-])", flag, message)
    return message


def _fail(message: str, code: int) -> NoReturn:
    stderr.print(f"[bold red]Error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)
