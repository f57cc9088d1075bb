"""``ferry export``: Write a signed, chunked bundle from a bundle spec (hub side)."""

from __future__ import annotations

import typer

from manifests.errors import FerryError


def register(app: typer.Typer) -> None:
    @app.command("export", epilog="Example: ferry export bundle.yaml --out /media/usb/edge-ai --key hub.key",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def export_cmd() -> None:
        """Write a signed, chunked bundle from a bundle spec (hub side)."""
        raise FerryError("ferry export is not implemented yet", exit_code=3)
