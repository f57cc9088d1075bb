"""The ``ferry`` command: one typer app, one module per command under ferry.commands.

Every failure the user can act on is a FerryError and ends as one line on stderr with a
non-zero status; usage errors (click's) are one line too, exit 2; anything else is reported as
an internal error in one line (set FERRY_DEBUG=1 to see the traceback).
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

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
    from ferry.commands import (audit, export, import_, inspect, keys, profile, push, receipt, returns, serve, sign,
                                site, status, trust, verify, watch)

    for module in (keys, trust, export, profile, sign, push, inspect, verify, import_, status, site, receipt, serve,
                   watch, audit, returns):
        module.register(app)


_register()


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"ferry: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _usage_line(exc: Exception) -> str:
    """A click usage error as one line: ``import: Missing option '--trust' (see ferry import --help)``."""
    ctx = getattr(exc, "ctx", None)
    message = " ".join(exc.format_message().split()).rstrip(".") if hasattr(exc, "format_message") else str(exc)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:  # the root's name is the program ("python -m ferry")
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    command = " ".join(names)
    return f"{command}: {message} (see ferry {command} --help)" if command else f"{message} (see ferry --help)"


def _click_exceptions() -> Any:
    """click's exception classes: typer >= 0.27 vendors click as ``typer._click``."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer uses click itself
        from click import exceptions  # type: ignore[no-redef,import-not-found,unused-ignore]
    return exceptions


def main() -> None:
    """Console entry point: run the app, turn every error into one line and an exit status.

    Usage errors (a missing option, an unknown command) are one line too, ``ferry: error: ...``
    with exit 2, instead of click's boxed usage text; ``--help`` and a bare ``ferry`` still
    print the help.
    """
    click_exc = _click_exceptions()
    try:
        code = app(standalone_mode=False)  # errors come here instead of being printed by click
    except click_exc.NoArgsIsHelpError as exc:  # a bare ``ferry`` or ``ferry keys``: the help, exit 2
        text = exc.format_message()  # rich help is printed while the error is made; plain help is here
        if text.strip():
            sys.stdout.write(text + "\n")
        raise SystemExit(2) from None
    except click_exc.UsageError as exc:
        fail(f"error: {_usage_line(exc)}", 2)
    except click_exc.ClickException as exc:  # e.g. a file argument click could not open
        fail(f"error: {' '.join(exc.format_message().split())}", 2)
    except (typer.Abort, KeyboardInterrupt, EOFError):
        fail("interrupted", 130)
    except FerryError as exc:
        fail(f"error: {exc}", exc.exit_code)
    except MemoryError:
        fail("error: out of memory", 2)
    except OSError as exc:
        if os.environ.get("FERRY_DEBUG"):
            raise
        if exc.errno == errno.EPIPE:  # the reader of our output went away (| head)
            raise SystemExit(1) from None
        if exc.errno == errno.ENOSPC:
            fail(f"error: no space left on device{f' writing {exc.filename}' if exc.filename else ''}", 2)
        if exc.errno == errno.ENOENT and exc.filename:  # as every missing path reads (manifests.bundle.not_found)
            from manifests.bundle import not_found

            fail(f"error: {not_found('file', exc.filename)}", 2)
        where = f" {exc.filename}" if exc.filename else ""
        fail(f"error:{where}: {exc.strerror or exc}", 2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("FERRY_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (set FERRY_DEBUG=1 for details)", 70)
    if code == 130:  # typer turns Ctrl-C inside a command into exit 130, silently
        fail("interrupted", 130)
    if isinstance(code, int) and code:
        raise SystemExit(code)
