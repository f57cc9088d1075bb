"""``ferry receipt``: the edge's inventory, carried back so the hub can export deltas."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ferry.ui import write_output


def build_receipt(state_dir: Path) -> bytes:
    """Canonical receipt bytes: chunk ids held, OCI blobs held (registry or layout, by
    digest), installed artifacts with versions and content digests, channels."""
    from importer.state import EdgeState
    from importer.store import ChunkStore
    from manifests.errors import PlaceError
    from manifests.model import utc_now
    from manifests.receipt import CONTENT_RE, InstalledArtifact, Receipt

    state = EdgeState.open_readonly(state_dir)
    if state is None:
        raise PlaceError("state", str(state_dir), f"--state {state_dir}: no ferry edge state here (nothing imported yet)")
    try:
        receipt = Receipt(
            site=state.site,
            created=utc_now(),
            chunks=tuple(ChunkStore(state).all_ids()),
            artifacts=tuple(InstalledArtifact(r.kind, r.name, r.version,
                                              r.content if CONTENT_RE.match(r.content) else None, r.variant)
                            for r in state.installed_rows()),
            channels=tuple(state.channels().items()),
            blobs=tuple(state.held_blobs()),
        )
    finally:
        state.close()
    return receipt.to_bytes()


def register(app: typer.Typer) -> None:
    @app.command("receipt", epilog="Example: ferry receipt --state /var/lib/ferry --out receipt.json --key edge.key")
    def receipt_cmd(
        state: Path = typer.Option(..., "--state", help="The edge state folder."),
        out: Path = typer.Option(..., "--out", help="Receipt file to write (FILE.sig beside it with --key)."),
        key: Optional[Path] = typer.Option(None, "--key", help="The edge's private key, to sign the receipt."),
    ) -> None:
        """Write the edge's inventory (chunks and OCI blobs held, versions, channels) for delta exports at the hub."""
        from manifests.keys import load_private
        from manifests.signing import RECEIPT_PAYLOAD_TYPE, SIGNATURE_SUFFIX, sign

        private = load_private(key) if key is not None else None  # a bad key fails before anything is written
        data = build_receipt(state)
        write_output(out, data, "--out")
        from manifests.progress import human_bytes
        from manifests.receipt import Receipt

        r = Receipt.from_bytes(data)
        typer.echo(f"receipt of site {r.site}: {len(r.artifacts)} artifact(s), {len(r.chunks)} chunk id(s) held, "
                   f"{len(r.blobs)} OCI blob(s) held, {len(r.channels)} channel(s); {human_bytes(len(data))}",
                   err=True)
        if private is not None:
            sig = sign(data, [private], payload_type=RECEIPT_PAYLOAD_TYPE).to_bytes()
            write_output(out.with_name(out.name + SIGNATURE_SUFFIX), sig, "--out")
        typer.echo(f"{out}" + (f"\n{out}{SIGNATURE_SUFFIX}" if private is not None else ""))
