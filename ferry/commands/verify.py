"""``ferry verify``: check bundles completely, without importing them, and write a report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ferry.ui import write_output
from manifests.errors import IncompleteError, VerificationError

if TYPE_CHECKING:
    from manifests.trust import Trust
    from ferry.ui import UI
    from importer.report import Report


def _print(report: Report, ui: UI) -> None:
    from rich.markup import escape as e  # report text is data from the medium, never markup
    from rich.table import Table

    from manifests.progress import human_bytes

    out = ui.out
    for c in report.checks:
        out.print(f"[red]✗[/] {e(c.name)}: {e(c.reason)}")
    for b in report.bundles:
        info = b.info or {}
        out.print(f"[bold]{e(b.title)}[/]  id {e(str(info.get('id', '?')))}  created {e(str(info.get('created', '?')))}  "
                  f"by {e(str(info.get('producer', '?')))}")
        out.print(f"manifest {b.manifest_digest}" + (f"  delta base: receipt {b.base['receipt'][:19]}… "
                                                     f"of {b.base['site']}" if b.base else ""))
        signers = Table(title="signatures", title_justify="left")
        for col in ("key id", "name", "valid", "counted", "reason"):
            signers.add_column(col, overflow="fold")
        for s in b.signers:
            signers.add_row(e(s.keyid[:16]) + "…", e(s.name or "(not trusted)"), "yes" if s.valid else "[red]no[/]",
                            "yes" if s.counted else "no", e(s.reason))
        out.print(signers)
        if b.artifacts:
            table = Table(title="artifacts", title_justify="left")
            cols = ["kind", "name", "version", "size", "files/blobs", "chunks ok/bad/missing/base", "status"]
            plan = any(a.plan for a in b.artifacts)
            for col in cols + (["import would"] if plan else []):
                table.add_column(col, overflow="fold")
            for a in b.artifacts:
                counts = a.chunks
                status = "[green]ok[/]" if a.status == "ok" else f"[red]{a.status}[/]"
                row = [a.kind, a.name, a.version, human_bytes(a.size), str(len(a.entries)),
                       f"{counts.ok}/{counts.bad}/{counts.missing}/{counts.held_by_base}", status]
                if plan:
                    if a.plan is None:
                        row.append("")
                    else:  # the import's plan, in the words `ferry import --dry-run` prints
                        word = f"{a.plan.status} [{a.plan.action}]" if a.plan.status else a.plan.action
                        row.append(f"[red]{e(word)}[/]: {e(a.plan.reason)}" if a.plan.refused
                                   else f"{e(word)}: {e(a.plan.reason)}")
                table.add_row(*row)
            out.print(table)
            for a in b.artifacts:  # a manifest set at a KubeStellar WEC: per object (importer.wec)
                if a.plan is not None and a.plan.placement:
                    out.print(f"{a.kind} {a.name} {a.version}: placement at this WEC", markup=False)
                    for line in a.plan.placement:
                        out.print("  " + line, markup=False)
        for c in b.checks:  # a bundle the import would skip (already imported) says so
            if c.ok and c.name == "plan":
                out.print(f"{e(c.name)}: {e(c.reason)}")
        for c in b.failures:
            out.print(f"[red]✗[/] {e(c.name)}: {e(c.reason)}")
    if report.verdict == "pass":
        out.print(f"[bold green]{e(report.summary)}[/]")


def _trust(files: list[Path], state: Path | None) -> Trust:
    """The --trust files; without any, the signed policy the --state folder pins (if any)."""
    from datetime import datetime, timezone

    from importer.trust_store import TrustStore
    from manifests.trust import load_trust

    pinned = TrustStore(state).current() if state is not None and not files else None
    return pinned.root.trust(datetime.now(timezone.utc)) if pinned else load_trust(files)


def register(app: typer.Typer) -> None:
    @app.command("verify", epilog="Example: ferry verify /media/usb/edge-ai --trust hub.pub "
                                  "--report report.json --html report.html")
    def verify_cmd(
        paths: list[str] = typer.Argument(..., help="Bundle folders, volume folders or folders of volumes; or "
                                          "oci://HOST/REPO:TAG (every chunk is read from the registry and checked as it arrives; nothing is copied)."),
        trust: list[Path] = typer.Option([], "--trust", metavar="FILE", help="Hub public key, trust policy, or signed policy (root.json with its .sig); repeatable."),
        report_file: Path | None = typer.Option(None, "--report", metavar="FILE.json", help="Write the JSON report here."),
        html_file: Path | None = typer.Option(None, "--html", metavar="FILE.html", help="Write a printable HTML report here."),
        state: Path | None = typer.Option(None, "--state", metavar="EDGE", help="Also say what an import into this edge would do "
                                          "(at a KubeStellar WEC, per object of each manifest set) "
                                          "(and, without --trust, verify against the signed policy it pins); "
                                          "exit 1 when it would refuse an artifact or the whole bundle (a reused bundle id), as import --dry-run."),
        insecure_registry: list[str] = typer.Option([], "--insecure-registry", help="Registry host to reach with "
                                                    "HTTPS without certificate checks, else plain HTTP (repeatable)."),
        sign_report: list[str] = typer.Option([], "--sign-report", metavar="KEY[:env=VAR|:fd=N|:file=PATH]",
                                              help="Sign the --report file with this key (FILE.json.sig beside it); repeatable."),
        json_out: bool = typer.Option(False, "--json", help="Print the JSON report on stdout."),
    ) -> None:
        """Check bundles completely, without importing them, and write a report.

        Exit 0 when everything passed, 1 when anything failed (with --state: also when the import would refuse an artifact or the bundle), 3 when everything given passed but volumes of a multi-volume bundle were not given (each volume verifies on its own).
        """
        from ferry.ui import UI
        from importer.report import render_html
        from importer.verify import Streamed, verify_paths
        from manifests import canonical

        from manifests.errors import UsageError

        if sign_report and report_file is None:
            raise UsageError("--sign-report signs the --report file: give --report FILE.json too")
        signers = []
        if sign_report:  # keys first: a wrong passphrase must not cost a whole verification
            from ferry.keyopts import ask_terminal, key_refs
            from manifests.keys import load_signing_keys

            signers = load_signing_keys(key_refs(sign_report), ask=ask_terminal)
        ui = UI(json_mode=json_out)
        from importer.link import Linked, open_link
        from manifests.link import is_oci_ref, parse_oci_ref

        refs = [parse_oci_ref(p) for p in paths if is_oci_ref(p)]
        trusted = _trust(trust, state)
        linked: list[Linked] = []
        try:
            folders = [Path(p) for p in paths if not is_oci_ref(p)]
            for ref in refs:  # signatures verified before any pack byte is read; then every chunk, streamed
                linked.append(open_link(ref, lambda _dirs: trusted, ui, insecure=frozenset(insecure_registry)))
            folders += [link.folder for link in linked]
            report = verify_paths(folders, trusted, state_dir=state, progress=ui if ui.interactive else None,
                                  streamed={link.folder: Streamed(str(link.ref), link.verify_reader(ui))
                                            for link in linked})
        finally:
            for link in linked:
                link.close()
        doc = report.to_dict()
        if report_file is not None:
            body = canonical.encode(doc) + b"\n"
            write_output(report_file, body, "--report")
            if signers:
                from manifests.signing import REPORT_PAYLOAD_TYPE, sign

                sig_path = report_file.with_name(report_file.name + ".sig")
                write_output(sig_path, sign(body, signers, REPORT_PAYLOAD_TYPE).to_bytes(), "--sign-report")
        if html_file is not None:
            write_output(html_file, render_html(report).encode("utf-8"), "--html")
        if json_out:
            ui.emit(doc)
        else:
            _print(report, ui)
        if report.verdict != "pass":  # the FAIL verdict line is the one error line, on stderr
            if all(check.name == "volumes" for _, check in report.failures):
                # every volume given verified; others are still to come (docs/bundle-format.md section 1)
                raise IncompleteError(report.summary)
            raise VerificationError(report.summary)
