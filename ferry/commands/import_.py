"""``ferry import``: verify bundles and apply them to the edge (models, images, manifests)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("import", epilog="Example: ferry import /media/usb/edge-ai --trust hub.pub --state /var/lib/ferry")
    def import_cmd(
        paths: list[Path] = typer.Argument(..., help="Bundle folders, volume folders, or folders of volumes; any order."),
        trust: list[Path] = typer.Option(..., "--trust", help="Hub public key or trust policy (repeatable)."),
        state: Path = typer.Option(..., "--state", help="The edge state folder (ledger, chunk store, models, audit)."),
        registry: Optional[str] = typer.Option(None, "--registry", help="Push images to HOST[:PORT] (default: OCI layout EDGE/oci)."),
        insecure_registry: list[str] = typer.Option([], "--insecure-registry", help="Registry host to reach with HTTPS without certificate checks, else plain HTTP (repeatable)."),
        manifests_dir: Optional[Path] = typer.Option(None, "--manifests-dir", help="Write manifest sets to DIR/<set>/ for a GitOps agent (default EDGE/manifests; not with --kubeconfig)."),
        kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", help="Server-side apply manifest sets into this cluster."),
        context: Optional[str] = typer.Option(None, "--context", help="Context in --kubeconfig."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and change nothing."),
        no_prune: bool = typer.Option(False, "--no-prune", help="On a KubeStellar WEC (ferry site set), keep objects "
                                      "that a newer manifest set no longer selects instead of deleting them."),
        allow_downgrade: bool = typer.Option(False, "--allow-downgrade", help="Install older versions (needs --reason)."),
        reason: Optional[str] = typer.Option(None, "--reason", help="Why a downgrade is allowed (goes into the audit trail)."),
        keep: Optional[int] = typer.Option(None, "--keep", help="Keep at most N versions of each model (never removes current)."),
        note: Optional[str] = typer.Option(None, "--note", help="Operator's note recorded with every audit entry."),
        max_age: Optional[str] = typer.Option(None, "--max-age", help="Refuse bundles created longer ago than this "
                                              "(e.g. 30d, 12h): updates withheld by a courier show up."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        """Verify bundles and apply them to the edge (models, images, manifests)."""
        from ferry.ui import UI
        from importer.run import ImportOptions, run_import

        from importer.policy import parse_max_age
        from manifests.errors import FerryError
        from manifests.oci import check_registry_host

        if kubeconfig is not None and manifests_dir is not None:
            raise FerryError("give --kubeconfig (apply to the cluster) or --manifests-dir (write a GitOps folder), not both")
        for host in ([registry] if registry else []) + insecure_registry:
            check_registry_host(host)  # before anything is applied: a bad host would leave images unpinned
        ui = UI(json_mode=json_out, quiet=not sys.stderr.isatty())
        opts = ImportOptions(paths=paths, trust=trust, state=state, registry=registry,
                             insecure_registries=frozenset(insecure_registry), manifests_dir=manifests_dir,
                             kubeconfig=kubeconfig, context=context, dry_run=dry_run,
                             allow_downgrade=allow_downgrade, reason=reason, keep=keep, note=note,
                             max_age=parse_max_age(max_age) if max_age else None, no_prune=no_prune)
        report = run_import(opts, ui)
        if json_out:
            ui.emit(report.to_json())
        else:
            _print(ui, report)
        for b in report.bundles:
            if b.missing_volumes and any(a.status == "waiting" for a in b.artifacts):
                ui.warn(f"bundle {(b.info or {}).get('name', b.digest)}: {b.reason}")
        if report.exit_code:
            problems = [f"{a.kind} {a.name} {a.version}: {a.status}" for b in report.bundles for a in b.artifacts
                        if a.status in ("refused", "failed")]
            problems += [f"bundle {b.digest[:19]}: refused" for b in report.bundles if b.status == "refused"]
            first = next((b.reason for b in report.bundles if b.status == "refused"), None) or next(
                a.reason for b in report.bundles for a in b.artifacts if a.status in ("refused", "failed"))
            sys.stderr.write(f"ferry: error: {len(problems)} refused or failed; first: {first}\n")
            raise typer.Exit(report.exit_code)


def _print(ui: object, report: object) -> None:
    """One line per bundle, one indented line per artifact: readable and greppable."""
    from ferry.ui import human_bytes

    out = ui.out  # type: ignore[attr-defined]
    for b in report.bundles:  # type: ignore[attr-defined]
        info = b.info or {}
        head = (f"bundle {info['name']} {info['id']} (channel {info['channel']}, sequence {info['sequence']})"
                if info else f"bundle {b.digest}")
        verb = {"planned": "plan", "imported": "imported", "repeat": "already imported", "partial": "partial",
                "settled": "imported with refusals", "refused": "REFUSED"}.get(b.status, b.status)
        out.print(f"{head}: {verb}" + (f": {b.reason}" if b.reason else ""), markup=False)
        for a in b.artifacts:
            was = f" (installed {a.installed})" if a.installed else ""
            size = f", {human_bytes(a.bytes)}" if a.bytes and a.status in ("applied", "planned", "waiting") else ""
            out.print(f"  {a.kind} {a.name} {a.version}{was}: {a.status} [{a.action}{size}] {a.reason}"
                      + (f" -> {a.ref}" if a.ref else ""), markup=False)
        if report.dry_run and b.status == "planned":  # type: ignore[attr-defined]
            out.print(f"  bytes to write under the state: {human_bytes(b.bytes_to_write)}; "
                      "nothing was changed (dry run)", markup=False)
