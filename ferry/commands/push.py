"""``ferry push``: store a bundle folder in an OCI registry, as an artifact (docs/bundle-format.md section 12)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from transport.bundles import PushResult


def register(app: typer.Typer) -> None:
    @app.command("push", epilog="Example: ferry push /srv/out/edge-ai oci://registry.hub:5000/ferry/edge-ai:42")
    def push_cmd(
        path: Path = typer.Argument(..., help="The bundle folder, or the folder of its volumes (all of them)."),
        ref: str = typer.Argument(..., metavar="oci://HOST/REPO:TAG", help="Where to store it."),
        insecure_registry: list[str] = typer.Option([], "--insecure-registry", help="Registry host to reach with "
                                                    "HTTPS without certificate checks, else plain HTTP (repeatable)."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        """Push a bundle to a registry: only blobs the repository lacks are uploaded.

        Credentials come from the Docker config (docker login, credential helpers); TLS is
        verified except for loopback hosts and --insecure-registry. Exit status: 0 pushed;
        2 bad input, a missing file or a registry error."""
        print_push(push_to(path, ref, insecure_registry), json_out)


def push_to(path: Path, ref: str, insecure: list[str]) -> PushResult:
    """Parse ``ref`` and push the bundle at ``path``; returns :class:`transport.bundles.PushResult`."""
    from manifests.link import parse_oci_ref
    from manifests.oci import check_registry_host
    from transport.bundles import push_bundle
    from transport.registry import RegistryClient

    target = parse_oci_ref(ref)
    for host in insecure:
        check_registry_host(host)
    client = RegistryClient(target.host, insecure_registries=frozenset(insecure))
    try:
        return push_bundle(path, client, target)
    finally:
        client.close()


def print_push(result: PushResult, json_out: bool) -> None:
    from ferry.ui import UI
    from manifests.progress import human_bytes

    ui = UI(json_mode=json_out)
    if json_out:
        ui.emit(result.to_json())
        return
    r = result
    ui.out.print(f"pushed {r.reference}@{r.digest}: {r.uploaded} blob(s) uploaded ({human_bytes(r.bytes_uploaded)}), "
                 f"{r.skipped} already there ({human_bytes(r.bytes_skipped)})", markup=False, highlight=False)
