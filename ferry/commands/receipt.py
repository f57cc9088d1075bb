"""``ferry receipt``: Write the edge's inventory for delta exports at the hub."""

from __future__ import annotations

import typer

from manifests.errors import FerryError


def register(app: typer.Typer) -> None:
    @app.command("receipt", epilog="Example: ferry receipt --state /var/lib/ferry --out receipt.json",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def receipt_cmd() -> None:
        """Write the edge's inventory for delta exports at the hub."""
        raise FerryError("ferry receipt is not implemented yet", exit_code=3)
