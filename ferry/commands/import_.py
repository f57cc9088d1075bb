"""``ferry import``: Verify a bundle and apply it to the edge (models, images, manifests)."""

from __future__ import annotations

import typer

from manifests.errors import FerryError


def register(app: typer.Typer) -> None:
    @app.command("import", epilog="Example: ferry import /media/usb/edge-ai --trust hub.pub --state /var/lib/ferry",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def import_cmd() -> None:
        """Verify a bundle and apply it to the edge (models, images, manifests)."""
        raise FerryError("ferry import is not implemented yet", exit_code=3)
