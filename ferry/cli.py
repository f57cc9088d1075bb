"""The ``ferry`` command: one typer app, one module per command under ferry.commands.

Every failure the user can act on is a FerryError and ends as one line on stderr with a
non-zero status; anything else is reported as an internal error in one line too (set
FERRY_DEBUG=1 to see the traceback).
"""

from __future__ import annotations

import errno
import os
import sys

import typer

from manifests import __version__
from manifests.errors import FerryError

app = typer.Typer(
    name="ferry",
    help="Move ML models, container images and Kubernetes/KubeStellar manifests into air-gapped "
         "sites as signed, chunked, resumable bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ferry {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print ferry's version and exit."),
) -> None:
    """ferry: signed, chunked, resumable bundles across an air gap."""


def _register() -> None:
    from ferry.commands import audit, export, import_, inspect, keys, receipt, site, status, verify

    for module in (keys, export, inspect, verify, import_, status, site, receipt, audit):
        module.register(app)


_register()


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"ferry: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def main() -> None:
    """Console entry point: run the app, turn every error into one line and an exit status."""
    try:
        app()  # typer handles usage errors itself (exit 2) and exits via SystemExit
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except FerryError as exc:
        fail(f"error: {exc}", exc.exit_code)
    except MemoryError:
        fail("error: out of memory", 2)
    except OSError as exc:
        if os.environ.get("FERRY_DEBUG"):
            raise
        if exc.errno == errno.ENOSPC:
            fail(f"error: no space left on device{f' writing {exc.filename}' if exc.filename else ''}", 2)
        where = f" {exc.filename}" if exc.filename else ""
        fail(f"error:{where}: {exc.strerror or exc}", 2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("FERRY_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (set FERRY_DEBUG=1 for details)", 70)
