"""The ``gradflow`` command: ``gradflow plugins`` (and, with later issues, train/check/...)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gradflow.errors import GradflowError

app = typer.Typer(
    name="gradflow",
    help="Train recurrent models online with pluggable gradient estimators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_STATE = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False,
) -> None:
    _STATE["debug"] = debug


# -- commands: each lives in its own module of gradflow_cli and is registered here -------------
from gradflow_cli.plugins_cmd import plugins  # noqa: E402

app.command(name="plugins")(plugins)

from gradflow_cli.train import train  # noqa: E402

app.command(name="train")(train)

from gradflow_cli.check import check  # noqa: E402

app.command(name="check")(check)

from gradflow_cli.config_cmd import config_app  # noqa: E402

app.add_typer(config_app, name="config")

from gradflow_cli.plot import plot  # noqa: E402

app.command(name="plot")(plot)

from gradflow_cli.sweep import sweep  # noqa: E402

app.command(name="sweep")(sweep)


def main() -> None:
    """Console-script entry point: one clear line and exit code 2 for user errors."""
    debug = "--debug" in sys.argv
    try:
        code = app(standalone_mode=False)  # an exit status when a typer.Exit was raised
        if isinstance(code, int) and code:
            if code == 130:  # KeyboardInterrupt (a second Ctrl-C while a run checkpoints)
                typer.echo("aborted", err=True)
            sys.exit(code)
    except GradflowError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: unknown command, bad flag value...
        if debug:
            raise
        fmt = getattr(exc, "format_message", None)
        message = fmt() if callable(fmt) else str(exc)
        typer.echo(f"error: {message} (see 'gradflow --help')", err=True)
        sys.exit(2)

if __name__ == "__main__":  # pragma: no cover
    main()
