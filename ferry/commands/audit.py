"""``ferry audit``: the edge's tamper-evident audit trail (importer.audit)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from manifests.errors import PlaceError, UsageError, VerificationError

if TYPE_CHECKING:
    from importer.audit import AuditCheck
    from manifests.signing import Verdict

audit_app = typer.Typer(help="Show, verify and export the edge's tamper-evident audit trail.",
                        no_args_is_help=True)

STATE_HELP = "The edge state folder (as given to ferry import --state)."


def _state(state: Path) -> Path:
    """``state`` when it is an edge state folder (a ledger or an audit trail in it); a mistyped
    folder is not an edge with a whole, empty trail."""
    from importer.audit import AUDIT_DIR
    from importer.state import DB_NAME

    if not state.is_dir():
        raise PlaceError("state", str(state), f"--state {state}: no such state folder")
    if not (state / DB_NAME).exists() and not (state / AUDIT_DIR).exists():
        raise PlaceError("state", str(state), f"--state {state}: no ferry edge state here (no ledger, no audit trail)")
    return state


def parse_since(text: str) -> datetime:
    """A date (2026-01-31) or an RFC 3339 time (2026-01-31T12:00:00Z); naive times are UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: give a date like 2026-01-31 or a time like "
                         "2026-01-31T12:00:00Z") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _verify_file(file: Path, trust_files: list[Path]) -> tuple[AuditCheck, Verdict]:
    from importer.audit import MAX_EXPORT_BYTES, parse_export
    from manifests import limits
    from manifests.bundle import read_bounded
    from manifests.signing import AUDIT_PAYLOAD_TYPE, SIGNATURE_SUFFIX, SignatureFile, verify
    from manifests.trust import load_trust

    trust = load_trust(trust_files)
    data = read_bounded(file, MAX_EXPORT_BYTES, "audit export", place="source")
    sig_path = file.with_name(file.name + SIGNATURE_SUFFIX)
    if not sig_path.exists():
        raise VerificationError(f"{sig_path} not found: the export is unsigned, its origin cannot be checked")
    sigfile = SignatureFile.from_bytes(read_bounded(sig_path, limits.MAX_SIGNATURE_FILE_BYTES,
                                                    "audit export signature", place="source"))
    # Signatures first, over the exact bytes: nothing unsigned reaches the parser.
    verdict = verify(data, sigfile, trust, channel=None, payload_type=AUDIT_PAYLOAD_TYPE)
    if not verdict.ok:
        raise VerificationError(f"audit export {file}: signatures: {verdict.summary}")
    return parse_export(data).check(), verdict


@audit_app.command("verify", epilog="Example: ferry audit verify --state /var/lib/ferry  |  "
                                    "ferry audit verify --file trail.json --trust edge.pub")
def verify_cmd(
    state: Path | None = typer.Option(None, "--state", metavar="EDGE", help=STATE_HELP),
    file: Path | None = typer.Option(None, "--file", metavar="FILE", help="An export written by ferry audit export."),
    trust: list[Path] = typer.Option([], "--trust", metavar="EDGE.pub", help="The edge's public key (with --file); repeatable."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check that an audit trail's hash chain is whole (an edge's, or a signed export)."""
    from ferry.ui import UI

    if (state is None) == (file is None):
        raise UsageError("give either --state EDGE or --file EXPORT (with --trust EDGE.pub)")
    signed_by = None
    if file is not None:
        if not trust:
            raise UsageError("--file needs --trust EDGE.pub: the key that signed the export")
        check, verdict = _verify_file(file, trust)
        signed_by = [s.name or s.keyid for s in verdict.signers if s.counted]
    else:
        from importer.audit import AuditTrail

        check = AuditTrail(_state(state)).verify()  # type: ignore[arg-type]
    ui = UI(json_mode=json_out)
    if json_out:
        doc = check.to_dict()
        if signed_by is not None:
            doc["signedBy"] = signed_by
        ui.emit(doc)
    elif check.ok:
        by = f"; export signed by {', '.join(signed_by)}" if signed_by else ""
        ui.out.print(f"[green]OK[/] {check.summary}{by}")
    if not check.ok:
        raise VerificationError(check.summary)


@audit_app.command("show", epilog="Example: ferry audit show --state /var/lib/ferry --since 2026-01-01")
def show_cmd(
    state: Path = typer.Option(..., "--state", metavar="EDGE", help=STATE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print entries as JSON lines."),
    since: str | None = typer.Option(None, "--since", metavar="DATE", help="Only entries at or after DATE (UTC)."),
) -> None:
    """Show the audit trail: a table, or JSON lines with --json."""
    from importer.audit import AuditTrail
    from manifests import canonical

    trail = AuditTrail(_state(state))
    when = parse_since(since) if since else None
    entries = trail.entries(when)
    if json_out:
        for entry in entries:
            sys.stdout.write(canonical.encode(entry).decode("utf-8") + "\n")
    else:
        from rich.table import Table

        from ferry.ui import UI

        table = Table(title=f"audit trail of {state}", show_lines=False)
        for column in ("seq", "time", "decision", "artifact", "before → after", "bundle", "reason"):
            table.add_column(column, overflow="fold")
        for e in entries:
            art = e["artifact"] or {}
            bundle = e["bundle"] or {}
            table.add_row(str(e["seq"]), e["time"], e["decision"],
                          f"{art.get('kind', '')} {art.get('name', '')}".strip(),
                          f"{e['versionBefore'] or '-'} → {e['versionAfter'] or '-'}",
                          str(bundle.get("name", "")),
                          e["reason"] + (f" (note: {e['note']})" if e["note"] else ""))
        UI().out.print(table)
    check = trail.verify()
    if not check.ok:
        print(f"warning: {check.summary}", file=sys.stderr)


@audit_app.command("export", epilog="Example: ferry audit export --state /var/lib/ferry --out trail.json --key edge.key")
def export_cmd(
    state: Path = typer.Option(..., "--state", metavar="EDGE", help=STATE_HELP),
    out: Path = typer.Option(..., "--out", help="File to write; the signature goes to FILE.sig."),
    key: Path | None = typer.Option(None, "--key", metavar="EDGEKEY", help="The edge's private key to sign the export with."),
) -> None:
    """Write the trail with its chain head as one canonical JSON file, signed for the auditors."""
    from ferry.ui import write_output
    from importer.audit import AuditTrail, build_export
    from manifests.keys import key_id, load_private
    from manifests.signing import AUDIT_PAYLOAD_TYPE, SIGNATURE_SUFFIX, sign

    private = load_private(key) if key is not None else None  # fail before writing anything
    trail = AuditTrail(_state(state))
    export = build_export(trail)
    body = export.to_bytes()
    sig_path = out.with_name(out.name + SIGNATURE_SUFFIX)
    if private is not None:
        write_output(sig_path, sign(body, [private], payload_type=AUDIT_PAYLOAD_TYPE).to_bytes(), "--out")
    else:
        sig_path.unlink(missing_ok=True)  # never leave a signature that belongs to another body
    write_output(out, body, "--out")
    check = export.check()
    signed = f", signed by key {key_id(private.public_key())[:16]}" if private is not None else ", unsigned"
    typer.echo(f"exported {len(export.entries)} entries to {out}{signed}")
    if private is None:
        print("warning: unsigned export: pass --key EDGEKEY so auditors can check where it came from",
              file=sys.stderr)
    if not check.ok:
        print(f"warning: exported as found, but {check.summary}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
