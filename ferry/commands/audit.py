"""``ferry audit``: the edge's tamper-evident audit trail."""

from __future__ import annotations

import typer

from manifests.errors import FerryError

audit_app = typer.Typer(help="Show, verify and export the edge's tamper-evident audit trail.", no_args_is_help=True)


@audit_app.command("verify", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def verify_cmd() -> None:
    """Check that the audit trail's hash chain is whole."""
    raise FerryError("ferry audit is not implemented yet", exit_code=3)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
