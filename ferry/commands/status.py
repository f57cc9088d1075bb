"""``ferry status``: Show what the edge has installed."""

from __future__ import annotations

import typer

from manifests.errors import FerryError


def register(app: typer.Typer) -> None:
    @app.command("status", epilog="Example: ferry status --state /var/lib/ferry",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def status_cmd() -> None:
        """Show what the edge has installed."""
        raise FerryError("ferry status is not implemented yet", exit_code=3)
