"""``ferry import``: verify bundles and apply them to the edge (models, images, manifests)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("import", epilog="Example: ferry import /media/usb/edge-ai --trust hub.pub --state /var/lib/ferry  |  "
                 "over a link: ferry import oci://registry.hub:5000/ferry/edge-ai:42 --trust hub.pub --state /var/lib/ferry")
    def import_cmd(
        paths: list[str] = typer.Argument(..., help="Bundle folders, volume folders, or folders of volumes; any order; "
                                          "or oci://HOST/REPO:TAG to read a bundle from a registry (only the chunks "
                                          "the site lacks are fetched; resumable)."),
        trust: list[Path] = typer.Option([], "--trust", help="Hub public key or trust policy (repeatable); not with a "
                                         "policy pinned by `ferry trust init`."),
        state: Path = typer.Option(..., "--state", help="The edge state folder (ledger, chunk store, models, audit)."),
        registry: Optional[str] = typer.Option(None, "--registry", help="Push images to HOST[:PORT] (default: OCI layout EDGE/oci)."),
        insecure_registry: list[str] = typer.Option([], "--insecure-registry", help="Registry host to reach with HTTPS without certificate checks, else plain HTTP (repeatable)."),
        manifests_dir: Optional[Path] = typer.Option(None, "--manifests-dir", help="Write manifest sets to DIR/<set>/ for a GitOps agent (default EDGE/manifests; not with --kubeconfig)."),
        kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", help="Server-side apply manifest sets into this cluster."),
        context: Optional[str] = typer.Option(None, "--context", help="Context in --kubeconfig (default: its "
                                               "current-context; needed when it has none)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and change nothing (at a KubeStellar WEC: per object, "
                                     "selected or not, by which policy and clause, and what would be pruned); "
                                     "the options are checked as for an import (a missing --kubeconfig is exit 2)."),
        no_prune: bool = typer.Option(False, "--no-prune", help="On a KubeStellar WEC (ferry site set), keep objects "
                                      "that a newer manifest set no longer selects instead of deleting them."),
        allow_downgrade: bool = typer.Option(False, "--allow-downgrade", help="Install older versions (needs --reason)."),
        allow_variant: bool = typer.Option(False, "--allow-variant", help="Install a model variant the site's "
                                           "resources (ferry site set --memory/--accelerator) cannot run."),
        reason: Optional[str] = typer.Option(None, "--reason", help="Why a downgrade is allowed (goes into the audit trail)."),
        keep: Optional[int] = typer.Option(None, "--keep", help="Keep at most N versions of each model (never removes current)."),
        note: Optional[str] = typer.Option(None, "--note", help="Operator's note recorded with every audit entry."),
        max_age: Optional[str] = typer.Option(None, "--max-age", help="Refuse bundles created longer ago than this "
                                              "(e.g. 30d, 12h): updates withheld by a courier show up."),
        atomic: bool = typer.Option(False, "--atomic", help="All or nothing: apply no artifact of a bundle unless "
                                    "every one of it can be applied (default: apply what is complete; manifest "
                                    "sets wait for the images and models they need)."),
        limit_rate: Optional[str] = typer.Option(None, "--limit-rate", metavar="RATE", help="Cap the bandwidth "
                                                 "used to read oci:// bundles, bytes per second (500K, 10M, 1G)."),
        memory_budget: Optional[str] = typer.Option(None, "--memory-budget", metavar="SIZE",
                                                    help="Keep read-ahead buffers and threads within this much memory "
                                                         "(default 256MiB, at least 192MiB), e.g. 200MiB on a small edge."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        """Verify bundles and apply them to the edge (models, images, manifests).

        Exit status: 0 done; 1 something was refused or failed; 2 bad input; 3 incomplete,
        waiting for volumes or files (the last line says which)."""
        from ferry.ui import UI
        from importer.plan import BundleStatus, Status
        from importer.run import ImportOptions, run_import
        from manifests.errors import EXIT_INCOMPLETE

        from bundler.spec import parse_size
        from importer.policy import parse_max_age
        from manifests.errors import UsageError
        from manifests.oci import check_registry_host

        if kubeconfig is not None and manifests_dir is not None:
            raise UsageError("give --kubeconfig (apply to the cluster) or --manifests-dir (write a GitOps folder), not both")
        for host in ([registry] if registry else []) + insecure_registry:
            check_registry_host(host)  # before anything is applied: a bad host would leave images unpinned
        from importer.link import parse_rate
        from manifests.link import is_oci_ref, parse_oci_ref

        links = [parse_oci_ref(p) for p in paths if is_oci_ref(p)]
        rate = parse_rate(limit_rate) if limit_rate else None
        ui = UI(json_mode=json_out, quiet=not sys.stderr.isatty())
        opts = ImportOptions(paths=[Path(p) for p in paths if not is_oci_ref(p)], links=links, limit_rate=rate, trust=trust, state=state, registry=registry,
                             insecure_registries=frozenset(insecure_registry), manifests_dir=manifests_dir,
                             kubeconfig=kubeconfig, context=context, dry_run=dry_run,
                             allow_downgrade=allow_downgrade, allow_variant=allow_variant, reason=reason, keep=keep, note=note,
                             max_age=parse_max_age(max_age) if max_age else None, atomic=atomic,
                             no_prune=no_prune,
                             **({"memory_budget": parse_size(memory_budget, what="--memory-budget")} if memory_budget else {}))
        try:
            report = run_import(opts, ui)
        except KeyboardInterrupt:
            from manifests.errors import Interrupted

            if dry_run:
                raise Interrupted("import interrupted: nothing was changed (dry run)") from None
            raise Interrupted(f"import interrupted: what was verified, stored and applied so far is kept in --state "
                              f"{state} (its ledger and audit trail record it); run the same command to resume") from None
        if json_out:
            ui.emit(report.to_json())
        else:
            _print(ui, report, registry)
        code = report.exit_code
        if code == EXIT_INCOMPLETE:
            waiting = [f"bundle {(b.info or {}).get('name', b.digest)}: {b.still_needed}"
                       for b in report.bundles if b.still_needed]
            sys.stderr.write(f"ferry: error: incomplete, waiting for volumes: {'; '.join(waiting)}\n")
            raise typer.Exit(code)
        if code:
            problems = [f"{a.kind} {a.name} {a.version}: {a.status}" for b in report.bundles for a in b.artifacts
                        if a.status in (Status.REFUSED, Status.FAILED)]
            problems += [f"bundle {b.digest[:19]}: refused" for b in report.bundles if b.status is BundleStatus.REFUSED]
            first = next((b.reason for b in report.bundles if b.status is BundleStatus.REFUSED), None) or next(
                f"{a.kind} {a.name} {a.version}: {a.status}: {a.reason}" for b in report.bundles for a in b.artifacts
                if a.status in (Status.REFUSED, Status.FAILED))
            waiting = [b.still_needed for b in report.bundles if b.still_needed]
            also = f"; also incomplete: {'; '.join(waiting)}" if waiting else ""
            sys.stderr.write(f"ferry: error: {len(problems)} refused or failed; first: {first}{also}\n")
            raise typer.Exit(code)


def _where(ref: str, registry: str | None) -> str:
    """Where an image went: pushed to ``--registry``, or kept in EDGE/oci with workloads pinned to ``ref``."""
    if registry:
        return f" -> {ref}"
    return f" -> EDGE/oci (no --registry; workloads pinned to {ref})"


def _print(ui: object, report: object, registry: str | None) -> None:
    """One line per bundle, one indented line per artifact (:func:`importer.plan.artifact_line`,
    the same words ``verify --state`` uses): readable and greppable."""
    from manifests.progress import human_bytes
    from importer.plan import BundleStatus, artifact_line

    out = ui.out  # type: ignore[attr-defined]
    for b in report.bundles:  # type: ignore[attr-defined]
        info = b.info or {}
        head = (f"bundle {info['name']} {info['id']} (channel {info['channel']}, sequence {info['sequence']})"
                if info else f"bundle {b.digest}")
        verb = {"planned": "plan", "imported": "imported", "repeat": "already imported", "partial": "partial",
                "settled": "imported with refusals", "refused": "REFUSED"}.get(b.status.value, b.status.value)
        said = b.reason if b.reason and b.reason.startswith(verb) else (  # "already imported; nothing to do"
            f"{verb}: {b.reason}" if b.reason else verb)
        out.print(f"{head}: {said}", markup=False)
        if b.fetched:
            f = b.fetched
            out.print(f"  fetched {f['chunksFetched']} of {f['chunksNeeded']} chunk(s) needed from "
                      f"{f['reference']} ({human_bytes(f['bytesFetched'])} in {f['requests']} request(s)"
                      + (f", {f['chunksAlready']} held already, an interrupted run's included" if f['chunksAlready']
                         else "")
                      + (f", {f['retries']} retried" if f['retries'] else "") + ")", markup=False)
        for a in b.artifacts:
            out.print("  " + artifact_line(a.kind, a.name, a.version, a.installed, a.status, a.action, a.bytes,
                                           a.reason, None, human_bytes)
                      + (_where(a.ref, registry) if a.ref else ""), markup=False)
            for line in a.placement:  # a manifest set at a KubeStellar WEC: per object (importer.wec)
                out.print("    " + line, markup=False)
        if report.dry_run and b.status is BundleStatus.PLANNED:  # type: ignore[attr-defined]
            out.print(f"  bytes to write under the state: {human_bytes(b.bytes_to_write)}; "
                      "nothing was changed (dry run)", markup=False)
