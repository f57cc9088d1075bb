"""``ferry inspect``: Show what a bundle holds, without any key."""

from __future__ import annotations

import typer

from manifests.errors import FerryError


def register(app: typer.Typer) -> None:
    @app.command("inspect", epilog="Example: ferry inspect /media/usb/edge-ai",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def inspect_cmd() -> None:
        """Show what a bundle holds, without any key."""
        raise FerryError("ferry inspect is not implemented yet", exit_code=3)
