"""The ``gradflow`` command: train, plugins, check, bench, config, plot, sweep, study; and
:func:`main`, which turns every error into one line and an exit status."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, TextIO

import typer
from gradflow_cli.help_format import CONTEXT_SETTINGS, Command, Group

from gradflow.contracts.errors import GradflowError, GradflowWarning
from gradflow.registry.discovery import exception_line, get_registry
from gradflow.registry.guard import culprit
from gradflow.version import __version__

app = typer.Typer(
    name="gradflow",
    help="Train recurrent models online with pluggable gradient estimators.",
    cls=Group,
    context_settings=CONTEXT_SETTINGS,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_STATE = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gradflow {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="print the version and exit")] = False,
) -> None:
    _STATE["debug"] = debug


# -- commands: each lives in its own module of gradflow_cli and is registered here -------------
from gradflow_cli.plugins_cmd import plugins  # noqa: E402

app.command(name="plugins", cls=Command)(plugins)

from gradflow_cli.train import train  # noqa: E402

app.command(name="train", cls=Command)(train)

from gradflow_cli.check import check  # noqa: E402

app.command(name="check", cls=Command)(check)

from gradflow_cli.bench import bench  # noqa: E402

app.command(name="bench", cls=Command)(bench)

from gradflow_cli.config_cmd import config_app  # noqa: E402

app.add_typer(config_app, name="config")

from gradflow_cli.plot import plot  # noqa: E402

app.command(name="plot", cls=Command)(plot)

from gradflow_cli.sweep import sweep  # noqa: E402

app.command(name="sweep", cls=Command)(sweep)

from gradflow_cli.study import study  # noqa: E402

app.command(name="study", cls=Command)(study)


def one_line(text: object) -> str:
    """``text`` on one line (the lines of a multi-line message joined by spaces)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings as one ``warning:`` line on standard error (never a source line)."""
    text = one_line(message)
    if not issubclass(category, GradflowWarning):
        text = f"{category.__name__}: {text} ({Path(filename).name}:{lineno})"
    typer.echo(f"warning: {text}", err=True)


def main() -> None:
    """Console-script entry point: one clear line for every error, and an exit status.

    0: done; 2: bad usage or input (a :class:`~gradflow.GradflowError`); 3: the numbers
    went non-finite (:class:`~gradflow.NumericalError`); 1: a bug in gradflow or a
    plugin (an unexpected exception, named in one line); 128 + N: stopped by signal N (130 for
    Ctrl-C). ``--debug`` shows the traceback instead of the line.
    """
    debug = "--debug" in sys.argv
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        warnings.simplefilter("always", GradflowWarning)  # each one, every time
        _main(debug)


def _main(debug: bool) -> None:
    try:
        # an exit status when a typer.Exit was raised; "gradflow" in usage lines however started
        code = app(standalone_mode=False, prog_name="gradflow")
        if isinstance(code, int) and code:
            if code == 130:  # KeyboardInterrupt (a second Ctrl-C while a run checkpoints)
                typer.echo("aborted", err=True)
            sys.exit(code)
    except GradflowError as exc:
        if debug:
            raise
        typer.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: unknown command, bad flag value...
        if debug:
            raise
        fmt = getattr(exc, "format_message", None)
        message = one_line(fmt() if callable(fmt) else str(exc)).replace("Value error, ", "")
        if message:  # (empty when the help was printed for a command given no arguments)
            typer.echo(f"error: {message} (see 'gradflow --help')", err=True)
        sys.exit(2)
    except MemoryError as exc:  # a configuration too big for this machine
        if debug:
            raise
        typer.echo(f"error: not enough memory ({exception_line(exc)}): use smaller sizes, "
                   "batches or sample counts", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug: one line all the same, and how to see more
        if debug:
            raise
        blamed = culprit(exc, [(info, info.cls) for info in get_registry().all()])
        if blamed is not None:  # raised inside a plugin's code (gradflow check, bench...)
            typer.echo(f"error: {blamed.origin} raised {exception_line(exc)}", err=True)
            sys.exit(2)
        typer.echo(f"error: internal error: {exception_line(exc)} (a bug in gradflow or a "
                   "plugin; run again with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
