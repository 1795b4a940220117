"""The ``dxkit`` command line: one typer app with a sub-command per job.

User errors (any ``DxkitError``) print one line naming the file/key and the fix and exit
with code 2; so does any other exception (named as a dxkit bug, or as the machine's error
for ``OSError``/``MemoryError``); ``--debug`` (anywhere on the line) shows the full
traceback instead. Usage
errors (a missing or unknown argument, option or command, a bad value) print typer's usage
line and a one-line error, also with exit code 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys

import typer
from rich.console import Console

from dxkit import __version__
from dxkit.errors import DxkitError

try:  # typer >= 0.22 carries its own copy of click and raises that copy's exceptions
    from typer._click.exceptions import ClickException
except ImportError:  # older typer runs on click itself (a dependency of those releases)
    from click.exceptions import ClickException  # type: ignore[assignment]

app = typer.Typer(
    name="dxkit",
    help="Deep-learning-assisted diagnosis from medical scans: prepare, train, evaluate, "
    "predict, explain and serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"dxkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the dxkit version and exit.",
        is_eager=True,
        callback=_show_version,
    ),
) -> None:
    """Deep-learning-assisted diagnosis from medical scans: prepare, train, evaluate,
    predict, explain and serve."""


COMMAND_MODULES = (
    "init",
    "run",
    "demo",
    "bench",
    "prepare",
    "explain",
    "explore",
    "serve",
    "pacs",
    "listen",
)


def _register() -> None:
    """Import each command module (``dxkit.cli.<name>``) so it adds its commands to ``app``.

    A module either decorates commands onto ``app`` directly, or defines its own
    ``typer.Typer`` named ``app``, which becomes the command group ``dxkit <name>``.
    Modules of workloads still being built may be absent; present ones must import cleanly.
    """
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"dxkit.cli.{name}") is None:
            continue
        module = importlib.import_module(f"dxkit.cli.{name}")
        group = getattr(module, "app", None)
        if isinstance(group, typer.Typer) and group is not app:
            app.add_typer(group, name=name, help=(module.__doc__ or "").strip().splitlines()[0])


def _configure_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    quiet = logging.WARNING if not debug else logging.INFO
    for noisy in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "pydicom",
    ):
        logging.getLogger(noisy).setLevel(quiet)


def unexpected_error_line(err: Exception) -> str:
    """One line for an exception that is not a ``DxkitError``: the machine's (disk full,
    no permission, out of memory) named as such, anything else named as a dxkit bug."""
    text = str(err).splitlines()[0] if str(err) else ""
    what = f"{type(err).__name__}: {text}" if text else type(err).__name__
    if isinstance(err, (OSError, MemoryError)):
        return f"{what} — check the disk, permissions and free memory, then run it again"
    return (
        f"internal error ({what}); this is a dxkit bug — run the same command with --debug "
        "for the traceback and report it"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dxkit`` script."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("DXKIT_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    _configure_logging(debug)
    try:
        code = app(args=args, prog_name="dxkit", standalone_mode=False)
    except DxkitError as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except ClickException as err:  # usage errors: typer's usage line + one line, exit 2
        err.show()
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted: finished checkpoints and files are kept")
        sys.exit(130)
    except Exception as err:  # anything else: one line too, unless --debug
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {unexpected_error_line(err)}", highlight=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


_register()
