"""``ferry verify``: Check a bundle completely, without importing it, and write a report."""

from __future__ import annotations

import typer

from manifests.errors import FerryError


def register(app: typer.Typer) -> None:
    @app.command("verify", epilog="Example: ferry verify /media/usb/edge-ai --trust hub.pub --report report.json",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def verify_cmd() -> None:
        """Check a bundle completely, without importing it, and write a report."""
        raise FerryError("ferry verify is not implemented yet", exit_code=3)
