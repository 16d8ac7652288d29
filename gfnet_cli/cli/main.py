"""Entry point of the ``gfnet`` command: global options, command registration, error policy.

Errors raised as :class:`gfnet_cli.errors.GFNetError` become one line on stderr and the
exit status SPEC.md gives (2: unusable input, 1: anything else). No traceback is shown
unless ``--debug`` (or ``GFNET_DEBUG=1``).
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.markup import escape

from gfnet_cli import __version__
from gfnet_cli.cli import (
    convert_cmd,
    download_cmd,
    evaluate_cmd,
    finetune_cmd,
    models_cmd,
    predict_cmd,
    profile_cmd,
    push_cmd,
)
from gfnet_cli.cli._common import State, setup_logging, stderr
from gfnet_cli.errors import GFNetError

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
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail to stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log only warnings and errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    State.debug = debug or os.environ.get("GFNET_DEBUG") == "1"
    State.quiet = quiet
    setup_logging(verbose=verbose, quiet=quiet)


_COMMANDS = (
    models_cmd,
    convert_cmd,
    download_cmd,
    predict_cmd,
    evaluate_cmd,
    finetune_cmd,
    profile_cmd,
    push_cmd,
)
for _module in _COMMANDS:
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors become one line and an exit status, never a traceback."""
    State.debug = os.environ.get("GFNET_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    try:
        # Not standalone: click's own usage errors (a boxed, multi-line message) and its
        # "Aborted!" on Ctrl-C then follow the same one-line policy as ours.
        code = app(args=argv, prog_name="gfnet", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:  # plain `gfnet`: the help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except click_exceptions.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "gfnet"
        _fail(f"{' '.join(exc.format_message().split())} (see {path} --help)", 2)
    except click_exceptions.ClickException as exc:
        _fail(" ".join(exc.format_message().split()), exc.exit_code)
    except typer.Abort:
        _fail("interrupted", 130)
    except GFNetError as exc:
        if State.debug:
            raise
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except MemoryError:
        if State.debug:
            raise
        _fail("out of memory: try a smaller --batch-size or --img-size", 1)
    except Exception as exc:  # the last line of defence: never a traceback without --debug
        if State.debug:
            raise
        logging.getLogger("gfnet_cli").debug("unexpected error", exc_info=True)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _fail(f"{type(exc).__name__}: {message} (run with --debug for the traceback)", 1)
    if code == 130:  # typer turns Ctrl-C into a silent exit 130
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    stderr.print(f"[bold red]Error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)
