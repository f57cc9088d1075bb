"""The return path on the command line: ``ferry return export|import``, ``ferry sites``, ``ferry aggregate``.

Glue only (docs/bundle-format.md §13, docs/operator-guide.md "The return path"): the edge's
documents (receipt, status, audit trail: ``importer``) are staged and handed to the hub's bundle
writer (``bundler.export``) with the return payload type; at the hub, the edge's medium reader
(``importer.medium``) verifies a return bundle against the site keys the hub inventory
(``bundler.inventory``) holds, and the inventory records it. ``bundler`` and ``importer`` never
import each other; this module connects them.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer

from ferry.keyopts import KEY_HELP

return_app = typer.Typer(no_args_is_help=True, help="Return bundles, site -> hub: export at the edge, import at the hub.")
sites_app = typer.Typer(help="The hub's sites: keys, last contact, what they run, updates, drift.")


# --------------------------------------------------------------------------- edge: export


def return_export(state: Path, spec_path: Path, out: Path, keys: list[str], max_volume_size: str | None,
                  audit_from_seq: int | None, json_out: bool, expires: str | None = None) -> None:
    """``ferry return export``: stage the site's report and updates, write them as a signed return bundle."""
    from bundler.export import ExportOptions, export
    from bundler.spec import parse_size
    from ferry.commands.receipt import build_receipt
    from ferry.commands.status import status_document
    from ferry.keyopts import ask_terminal, key_refs
    from ferry.ui import UI
    from importer.policy import parse_max_age
    from importer.returns import RETURN_DIR, audit_from, load_return_spec, mark_sent, stage
    from manifests.errors import UsageError
    from manifests.returns import RETURN_ARTIFACT, RETURN_ARTIFACT_VERSION
    from manifests.signing import RETURN_PAYLOAD_TYPE

    ui = UI(json_mode=json_out)
    state = Path(os.path.abspath(state))
    spec = load_return_spec(spec_path)
    receipt = build_receipt(state)  # refuses a folder that is no edge state
    status = status_document(state)
    site = status["site"]
    first = audit_from(state) if audit_from_seq is None else audit_from_seq
    if first < 0:
        raise UsageError("--audit-from must be 0 or more")
    work = state / RETURN_DIR
    staging = work / "staging"
    doc, audit_next = stage(state, spec, staging, site=site, receipt=receipt, status=status, first=first)
    lines = [f"apiVersion: ferry/v1", "kind: Bundle", "metadata:", f"  name: return-{site}"[:133],
             f"  channel: {site}", "spec:", "  models:",
             f"    - name: {RETURN_ARTIFACT}", f"      version: {RETURN_ARTIFACT_VERSION}",
             f"      path: {json.dumps(str(staging / 'report'))}"]
    for u in doc.updates:
        lines += [f"    - name: {u.model}", f"      version: {json.dumps(u.base + '+site.' + site)}",
                  f"      path: {json.dumps(str(staging / 'updates' / u.model))}"]
    spec_file = work / "bundle.yaml"
    spec_file.write_text("\n".join(lines) + "\n", "utf-8")
    opts = ExportOptions(spec=spec_file, out=out, keys=tuple(key_refs(keys)),
                         state=work / "writer",
                         max_volume_size=parse_size(max_volume_size, what="--max-volume-size") if max_volume_size else None,
                         ask=ask_terminal, payload_type=RETURN_PAYLOAD_TYPE, state_label="edge state",
                         expires=parse_max_age(expires, option="--expires") if expires else None)
    result = export(opts, ui)
    mark_sent(state, audit_next)
    shutil.rmtree(staging, ignore_errors=True)
    summary = {"site": site, "sequence": result.manifest.bundle.sequence, "digest": result.digest, "out": str(out),
               "audit": {"from": doc.audit_from, "count": doc.audit_count},
               "updates": [u.to_dict() for u in doc.updates], "metrics": len(doc.metrics), "drift": len(doc.drift)}
    if json_out:
        ui.emit(summary)
    else:
        typer.echo(f"return bundle of site {site}, sequence {summary['sequence']}: {len(doc.updates)} model "
                   f"update(s), {doc.audit_count} audit entr{'y' if doc.audit_count == 1 else 'ies'}, "
                   f"{len(doc.metrics)} metrics file(s), {len(doc.drift)} drift summar{'y' if len(doc.drift) == 1 else 'ies'} -> {out}")


# --------------------------------------------------------------------------- hub: import


def _audit_slice(data: bytes, ret: Any) -> Any:
    """Check carried audit lines: each entry's own hash, and links between them (importer.audit rules)."""
    from bundler.inventory import AuditSlice
    from importer.audit import check_entry_shape, entry_hash
    from manifests import canonical
    from manifests.errors import FormatError

    entries: list[dict[str, Any]] = []
    for i, line in enumerate(data.splitlines()):
        entry = check_entry_shape(canonical.decode(line, what=f"audit entry {i} of the return bundle"),
                                  f"audit entry {i} of the return bundle")
        if entry_hash(entry) != entry["hash"]:
            raise FormatError(f"audit entry {entry['seq']} of the return bundle was edited: its content does not match its hash")
        if entries and (entry["seq"] != entries[-1]["seq"] + 1 or entry["prev"] != entries[-1]["hash"]):
            raise FormatError(f"audit entry {entry['seq']} of the return bundle does not link to the one before it")
        entries.append(entry)
    if len(entries) != ret.audit_count or (entries and entries[0]["seq"] != ret.audit_from):
        raise FormatError(f"the return bundle's audit.jsonl holds {len(entries)} entries, but return.json says "
                          f"{ret.audit_count} from {ret.audit_from}")
    if not entries:
        return AuditSlice(count=0)
    return AuditSlice(count=len(entries), first_seq=entries[0]["seq"], first_prev=entries[0]["prev"],
                      last_seq=entries[-1]["seq"], last_hash=entries[-1]["hash"],
                      hashes=tuple((e["seq"], e["hash"]) for e in entries))


def model_library(models: Path | None) -> Path | None:
    """``--models`` (the hub's model library MODELS/NAME/VERSION/), checked before any work:
    a mistyped folder is refused, never read as a library holding nothing.

    Raises:
        PlaceError: (``source``) ``model library /x: not found``, or not a folder.
    """
    if models is None or models.is_dir():
        return models
    from manifests.bundle import not_found
    from manifests.errors import PlaceError

    raise PlaceError("source", str(models), f"model library {models}: not a folder" if models.exists()
                     else not_found("model library", models))


def _known_bases(models: Path | None) -> set[tuple[str, str]] | None:
    if models is None:
        return None
    return {(m.name, v.name) for m in models.iterdir() if m.is_dir() for v in m.iterdir() if v.is_dir()}


def return_import(path: Path, hub: Path, models: Path | None, json_out: bool) -> dict[str, Any]:
    """``ferry return import``: verify a return bundle against the site keys and record it.

    A return bundle past its signed ``bundle.expires``, or signed with one and dated more than 5
    minutes ahead of the hub's clock, is refused before its content is read
    (:meth:`bundler.inventory.Inventory.time_problem`; docs/bundle-format.md §3.1, §13).

    Then the site's recorded resources (``status.json`` ``siteIdentity.resources``) become its
    profile in ``HUB/profiles/`` unless one was given by hand (``bundler.profiles.profile_from_return``;
    docs/spec.md, *Site profiles*); the result's ``profile.kept`` says which. A hub state that
    cannot be written then is a PlaceError, the bundle already recorded.

    Raises:
        VerificationError: unknown key, another site's key, a bad chunk. PolicyError: replay,
        audit discontinuity, unknown base. FormatError: a malformed document or update.
        expired or future-dated return bundle. IncompleteError: volumes missing. The inventory is unchanged by every refusal
        (the refusal itself is logged in ``HUB/sites/refusals.jsonl``).
    """
    from bundler.aggregate import check_finite, check_alike, read_header
    from bundler.inventory import Inventory
    from bundler.profiles import profile_from_return
    from importer.content import stream_entry
    from importer.medium import PackReader, find_bundles
    from manifests.errors import ChunkError, FerryError, FormatError, IncompleteError, PolicyError, UsageError
    from manifests.keys import parse_public
    from manifests.model import utc_now
    from manifests.receipt import Receipt
    from manifests.returns import MAX_DOC_BYTES, RETURN_ARTIFACT, ReturnDoc, parse_drift
    from manifests.signing import RETURN_PAYLOAD_TYPE
    from manifests.trust import Trust, TrustedKey
    from manifests.variants import Resources

    from bundler.hubstate import existing_hub_state

    inv = Inventory(existing_hub_state(hub))
    model_library(models)
    keys = inv.site_keys()
    if not keys:
        raise UsageError(f"--hub {hub}: no site keys registered; add one per site with ferry sites add NAME --key SITE.pub")
    trust = Trust(keys={kid: TrustedKey(name=site, public=parse_public(pem.encode(), f"key of site {site}"),
                                        channels=frozenset({site})) for kid, (site, pem) in keys.items()})
    site: str | None = None
    found = find_bundles([path])  # no bundle there (a mistyped path) is no refusal: nothing is logged
    if len(found) != 1:
        raise UsageError(f"{path}: holds {len(found)} bundles; give one return bundle")
    bundle = found[0]
    try:
        signed = bundle.open(trust, RETURN_PAYLOAD_TYPE)
        m = signed.manifest
        site = m.bundle.channel
        signer = next(s.keyid for s in signed.verdict.signers if s.counted)
        problem = inv.time_problem(site, m.bundle.created, m.bundle.expires, datetime.now(timezone.utc))
        if problem:  # before a byte of its content is read (an expired bundle may be large)
            raise PolicyError(f"{path}: return bundle of site {site}, sequence {m.bundle.sequence}: {problem}")
        with PackReader(m, bundle.volume_dirs) as reader:
            if reader.damaged_files():
                raise FormatError(f"{path}: pack file(s) missing from the volumes given: {', '.join(reader.damaged_files())}")
            if reader.missing_volumes():
                raise IncompleteError(f"{path}: return bundle of site {site} waits for volume(s) "
                                      f"{', '.join(map(str, reader.missing_volumes()))}; nothing recorded yet")
            arts = {a.name: a for a in m.artifacts}
            report = arts.get(RETURN_ARTIFACT)
            if report is None or any(a.kind != "model" for a in m.artifacts):
                raise FormatError(f"{path}: not a return bundle (no {RETURN_ARTIFACT} artifact)")
            incoming = inv.incoming()
            try:
                for a in m.artifacts:
                    for e in a.entries:
                        if a.name == RETURN_ARTIFACT:
                            dest = incoming / "report" / (e.path or "")
                        elif e.path == "model.safetensors":
                            dest = incoming / "updates" / f"{a.name}.safetensors"
                        else:
                            raise FormatError(f"{path}: update {a.name} holds {e.path}, not only model.safetensors")
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        try:
                            with open(dest, "wb") as f:
                                for data in stream_entry(e, m, reader):
                                    f.write(data)
                        except ChunkError as exc:  # name the medium and the site, not only the chunk
                            raise ChunkError(exc.chunk_id, exc.why, f"{path}: return bundle of site {site}: {exc}") from None
                rep = incoming / "report"

                def small(name: str) -> bytes:
                    p = rep / name
                    if not p.is_file():
                        raise FormatError(f"{path}: the return bundle lacks {name}")
                    if p.stat().st_size > MAX_DOC_BYTES:
                        raise FormatError(f"{path}: {name} is over {MAX_DOC_BYTES} bytes")
                    return p.read_bytes()

                ret = ReturnDoc.from_bytes(small("return.json"))
                receipt = Receipt.from_bytes(small("receipt.json"))
                try:
                    status = json.loads(small("status.json"))
                except ValueError:
                    raise FormatError(f"{path}: status.json is not JSON") from None
                if not isinstance(status, dict):
                    raise FormatError(f"{path}: status.json is not a JSON object")
                ident = status.get("siteIdentity")
                resources = Resources.from_json(ident.get("resources") if isinstance(ident, dict) else None,
                                                f"{path}: status.json siteIdentity.resources") \
                    if isinstance(ident, dict) and ident.get("resources") is not None else Resources()
                audit_path = rep / "audit.jsonl"
                audit = _audit_slice(audit_path.read_bytes() if audit_path.is_file() else b"", ret)
                declared = {u.model for u in ret.updates}
                carried = {a for a in arts if a != RETURN_ARTIFACT}
                if declared != carried:
                    raise FormatError(f"{path}: return.json declares updates of {sorted(declared)}, the bundle "
                                      f"carries {sorted(carried)}")
                for u in ret.updates:
                    if arts[u.model].version != f"{u.base}+site.{site}":
                        raise FormatError(f"{path}: update {u.model} is version {arts[u.model].version}, "
                                          f"not {u.base}+site.{site}")
                    file = incoming / "updates" / f"{u.model}.safetensors"
                    label = f"site {site} ({u.model})"
                    try:
                        check_finite(file, label)
                        if models is not None and (models / u.model / u.base / "model.safetensors").is_file():
                            check_alike({"the base model": read_header(models / u.model / u.base / "model.safetensors"),
                                         label: read_header(file)})
                    except FormatError as exc:  # name the return bundle, not the hub's staging copy
                        why = str(exc).removeprefix(f"{file}: ")
                        raise FormatError(f"{path}: update {u.model} of site {site}: {why}") from None
                carried_report = {e.path for e in report.entries}
                for name in ret.metrics + ret.drift:  # only files the signed manifest lists (no ../)
                    if name not in carried_report:
                        raise FormatError(f"{path}: return.json names {name}, which the bundle does not carry")
                for d in ret.drift:
                    parse_drift(small(d), f"drift summary {d} of site {site}")
                kept = inv.record_return(site=site, keyid=signer, sequence=m.bundle.sequence, digest=signed.digest,
                                         when=utc_now(), ret=ret, audit=audit, files=incoming,
                                         receipt=json.loads(receipt.to_bytes()), status=status,
                                         known_base=_known_bases(models), created=m.bundle.created)
            finally:
                shutil.rmtree(incoming, ignore_errors=True)
    except FerryError as exc:
        if not isinstance(exc, IncompleteError):
            inv.record_refusal(site, utc_now(), str(exc))
        raise
    profile = profile_from_return(hub, site, resources)  # recorded already: a write failure here is no refusal
    return {"site": site, "sequence": m.bundle.sequence, "digest": signed.digest, "signer": signer,
            "kept": str(kept), "updates": [u.to_dict() for u in ret.updates],
            "audit": {"from": ret.audit_from, "count": ret.audit_count}, "drift": list(ret.drift),
            "profile": {"resources": resources.to_json(), "kept": profile}}


PROFILE_NOTES = {"kept": "site profile kept from it", "hand": "site profile given by hand kept (it wins)",
                 "unrecorded": "no site profile (the site recorded no --memory/--accelerator)"}


# --------------------------------------------------------------------------- hub: sites


def sites_document(hub: Path, models: Path | None, threshold: float) -> dict[str, Any]:
    """What ``ferry sites`` shows: every site, last contact, what it runs, refusals, updates, drift."""
    from bundler.inventory import Inventory
    from manifests.errors import FerryError
    from manifests.returns import drift_report, parse_drift

    inv = Inventory(hub)
    doc = inv.read()
    refusals = inv.refusals()
    sites = []
    for name, rec in sorted(doc["sites"].items()):
        drift = []
        for f in rec.get("drift", []):
            try:
                summary = parse_drift(Path(f).read_bytes(), f"drift summary {f}")
            except (OSError, FerryError) as exc:
                drift.append({"file": f, "error": str(exc)})
                continue
            entry: dict[str, Any] = {"file": f, "model": summary.model, "version": summary.version, "features": []}
            ref = None if models is None else models / summary.model / summary.version / "drift-reference.json"
            if ref is not None and ref.is_file():
                try:
                    entry["features"] = drift_report(summary, parse_drift(ref.read_bytes(), str(ref)), threshold)
                except FerryError as exc:
                    entry["error"] = str(exc)
            else:
                entry["note"] = "no reference distribution (drift-reference.json in the model version folder)"
            drift.append(entry)
        status = rec.get("status")
        status = status if isinstance(status, dict) else {}
        sites.append({
            "site": name, "keyid": rec.get("keyid"), "lastContact": rec.get("lastContact"),
            "lastSequence": rec.get("lastSequence", 0), "reported": rec.get("reported"),
            "runs": [{"kind": a.get("kind"), "name": a.get("name"), "version": a.get("version")}
                     for a in _items(status.get("installed")) if isinstance(a, dict)],
            "channels": status.get("channels") if isinstance(status.get("channels"), dict) else {},
            "objectStatus": status.get("objectStatus"),
            "edgeRefusals": [r for r in _items(status.get("refusals")) if isinstance(r, dict)],
            "refusals": [r for r in refusals if r.get("site") == name],
            "pendingUpdates": [u for u in rec.get("updates", []) if not u.get("aggregatedInto")],
            "aggregatedUpdates": [u for u in rec.get("updates", []) if u.get("aggregatedInto")],
            "drift": drift,
            "driftAlerts": [f"{d['model']} {d['version']} {x['feature']} PSI {x['psi']:.3f}"
                            for d in drift for x in d.get("features", []) if x.get("flag")],
            "metrics": rec.get("metrics", []),
        })
    return {"hub": str(hub), "threshold": threshold, "sites": sites,
            "unattributedRefusals": [r for r in refusals if r.get("site") not in doc["sites"]]}


def _items(value: Any) -> list[Any]:
    """A list the site's ``status.json`` carried, or [] for anything else: the site writes it
    (signed, but a site's word), and ``ferry sites`` never fails on what one site sent."""
    return value if isinstance(value, list) else []


def run_label(run: dict[str, Any]) -> str:
    """One thing a site runs, as ``ferry sites`` prints it: ``sentiment 1.2.0``.

    Args:
        run: an entry of :func:`sites_document`'s ``runs`` (``kind``, ``name``, ``version``: the
            edge's ``ferry status`` fields). An image's name is its ``repository:tag`` (the unit
            the edge records, :attr:`manifests.model.Artifact.key`), so its version is added only
            when the tag is not the version already: ``team/server:1.2.0``, ``team/server:stable (1.2.0)``.
    Returns:
        The label, for the text and HTML renderings alike.
    """
    name, version = str(run.get("name")), str(run.get("version"))
    if run.get("kind") == "image":
        return name if name.endswith(f":{version}") else f"{name} ({version})"
    return f"{name} {version}"


def sites_html(doc: dict[str, Any]) -> str:
    """A self-contained HTML page of :func:`sites_document`: every value escaped for HTML, and
    its forbidden characters (a bidi override could reorder what a reader sees) shown as
    ``\\u{XXXX}`` (:func:`manifests.text.printable`)."""
    from manifests.text import printable

    def e(value: object) -> str:
        return html.escape(printable(value))

    rows = []
    for s in doc["sites"]:
        runs = "<br>".join(e(f"{r['kind']} {run_label(r)}") for r in s["runs"]) or "—"
        ups = "<br>".join(e(f"{u['model']} from {u['base']}: {u['examples']} examples") for u in s["pendingUpdates"]) or "—"
        alerts = "<br>".join(e(a) for a in s["driftAlerts"]) or "none"
        refs = "<br>".join(e(f"{r.get('time')} {r.get('reason')}") for r in s["refusals"] + s["edgeRefusals"]) or "none"
        rows.append(f"<tr><td>{e(s['site'])}</td><td>{e(str(s['lastContact'] or 'never'))}</td>"
                    f"<td>{e(str(s['lastSequence']))}</td><td>{runs}</td><td>{ups}</td>"
                    f"<td class={'alert' if s['driftAlerts'] else 'ok'}>{alerts}</td><td>{refs}</td></tr>")
    return ("<!doctype html><html><head><meta charset=utf-8><title>ferry sites</title><style>"
            "body{font-family:sans-serif}td,th{border:1px solid #999;padding:4px;vertical-align:top}"
            "table{border-collapse:collapse}.alert{background:#fdd}.ok{background:#dfd}</style></head><body>"
            f"<h1>ferry sites</h1><p>hub {e(doc['hub'])}; drift threshold PSI {doc['threshold']}</p>"
            "<table><tr><th>site</th><th>last contact</th><th>return sequence</th><th>runs</th>"
            "<th>pending model updates</th><th>drift alerts</th><th>refusals</th></tr>"
            + "".join(rows) + "</table></body></html>\n")


# --------------------------------------------------------------------------- hub: aggregate


def aggregate_cmd(model: str, base: str, version: str, out: Path, hub: Path, models: Path | None,
                  trim: int, max_norm_ratio: float | None = None, exclude: list[str] | None = None) -> dict[str, Any]:
    """``ferry aggregate``: FedAvg (or trimmed mean) of the pending updates of MODEL from BASE.

    Each update is named in refusals by its site and return bundle (sequence and manifest
    digest); ``max_norm_ratio`` refuses an update far from the others (bundler.aggregate).
    ``exclude``: ``--exclude SITE[=REASON]`` values: those sites' updates are left out, stay
    pending, and are recorded in the provenance (:func:`bundler.inventory.select_updates`).
    Raises: UsageError, FormatError, PolicyError (the norm screen), PlaceError; the inventory
    is marked only when the new version is written."""
    from bundler.aggregate import PROVENANCE_NAME, WEIGHTS_NAME, aggregate, write_provenance
    from bundler.inventory import Inventory, parse_exclusions, select_updates
    from manifests.errors import UsageError
    from manifests.model import NAME_RE, utc_now
    from manifests.version import parse_version

    if not NAME_RE.match(model):
        raise UsageError(f"model {model!r} is not a name")
    parse_version(base, where="--base")
    parse_version(version, where="--version")
    from bundler.hubstate import existing_hub_state

    excluding = parse_exclusions(exclude or [])
    inventory = Inventory(existing_hub_state(hub))
    model_library(models)
    selection = select_updates(inventory.pending_updates(model, base), sorted(inventory.read()["sites"]), excluding,
                               f"model {model} from base {base}", f"--hub {hub}")
    updates = selection.kept
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty: give a new folder for version {version}")
    base_dir = None if models is None else models / model / base
    base_file = None if base_dir is None else base_dir / WEIGHTS_NAME
    if base_file is not None and not base_file.is_file():
        raise UsageError(f"--models {models}: no {model}/{base}/{WEIGHTS_NAME} (the base version)")
    result = aggregate([(f"site {u['site']} (return bundle {u['sequence']}, {u['bundle'][:19]}…)", Path(u["file"]),
                         int(u["examples"])) for u in updates],
                       out / WEIGHTS_NAME, base_file=base_file, trim=trim, max_norm_ratio=max_norm_ratio,
                       metadata={"name": model, "version": version, "aggregatedFrom": base})
    if base_dir is not None:  # the rest of the model (config, tokenizer) comes from the base version
        for p in sorted(base_dir.rglob("*")):
            rel = p.relative_to(base_dir)
            if p.is_file() and not p.is_symlink() and str(rel) not in (WEIGHTS_NAME, PROVENANCE_NAME):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, out / rel)
    total = sum(int(u["examples"]) for u in updates)
    provenance = {"format": "ferry-provenance", "formatVersion": "1.1", "model": model, "version": version,
                  "base": base, "method": result["method"], "created": utc_now(),
                  "sites": [{"site": u["site"], "sequence": u["sequence"], "bundle": u["bundle"],
                             "keyid": u["keyid"], "examples": u["examples"],
                             "weight": f"{u['examples']}/{total}", "metrics": u.get("metrics", {})}
                            for u in updates],
                  "excluded": selection.excluded}
    write_provenance(out, provenance)
    Inventory(hub).mark_aggregated(updates, version)
    return {"out": str(out), **result, "sites": [u["site"] for u in updates], "examples": total,
            "excluded": selection.excluded}


# --------------------------------------------------------------------------- registration


def register(app: typer.Typer) -> None:
    @return_app.command("export", epilog="Example: ferry return export --state /var/lib/ferry --spec return.yaml "
                                         "--out /media/usb/return --key site-01.key")
    def export_cmd(
        state: Path = typer.Option(..., "--state", help="The edge state folder."),
        spec: Path = typer.Option(..., "--spec", help="The return spec (apiVersion ferry/v1, kind Return)."),
        out: Path = typer.Option(..., "--out", help="Folder to write the return bundle into (new or empty, or an "
                                 "unfinished one to resume)."),
        key: list[str] = typer.Option(..., "--key", metavar="KEY[:env=VAR|:fd=N|:file=PATH]", help=KEY_HELP),
        max_volume_size: Optional[str] = typer.Option(None, "--max-volume-size", help="Split into volumes of at most this size."),
        audit_from_seq: Optional[int] = typer.Option(None, "--audit-from", help="Carry audit entries from this seq "
                                                     "(default: after the last return bundle; the hub names it when one got lost)."),
        expires: Optional[str] = typer.Option(None, "--expires", metavar="DURATION",
                                              help="Sign an expiry into the return bundle (e.g. 30d, 12h): the hub "
                                                   "refuses it after that."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        """Write a signed return bundle (edge side): receipt, status, audit trail since the last one, model updates, metrics, drift."""
        return_export(state, spec, out, key, max_volume_size, audit_from_seq, json_out, expires)

    @return_app.command("import", epilog="Example: ferry return import /media/usb/return --hub /srv/ferry-hub --models /srv/models")
    def import_cmd(
        path: Path = typer.Argument(..., help="The return bundle (folder or volumes)."),
        hub: Path = typer.Option(..., "--hub", "--state", help="The hub state folder, as export --state (its sites/ inventory is updated)."),
        models: Optional[Path] = typer.Option(None, "--models", help="The hub's model library MODELS/NAME/VERSION/: "
                                              "updates from a base not there are refused."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        """Verify a site's return bundle against its key and record it in the hub inventory (hub side).

        The site's recorded resources (ferry site set --memory, --accelerator, --link) become its
        profile in HUB/profiles/ for export --site, unless one was given by hand (ferry profile add wins)."""
        from ferry.ui import UI

        result = return_import(path, hub, models, json_out)
        if json_out:
            UI(json_mode=True).emit(result)
        else:
            typer.echo(f"site {result['site']} return sequence {result['sequence']}: recorded "
                       f"({len(result['updates'])} model update(s), {result['audit']['count']} audit entries) in {hub}; "
                       f"{PROFILE_NOTES[result['profile']['kept']]}")

    app.add_typer(return_app, name="return")

    @sites_app.callback(invoke_without_command=True, epilog="Example: ferry sites --hub /srv/ferry-hub --models /srv/models --html sites.html")
    def sites_cmd(
        ctx: typer.Context,
        hub: Optional[Path] = typer.Option(None, "--hub", "--state", help="The hub state folder, as export --state."),
        models: Optional[Path] = typer.Option(None, "--models", help="Model library MODELS/NAME/VERSION/ holding "
                                              "drift-reference.json files (drift is computed against them)."),
        threshold: float = typer.Option(0.2, "--threshold", help="PSI at or above which a feature is flagged."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
        html_out: Optional[Path] = typer.Option(None, "--html", help="Write a report a person can read."),
    ) -> None:
        """Every site the hub knows: last contact, what it runs, refusals, pending model updates, drift alerts."""
        if ctx.invoked_subcommand is not None:
            return
        from ferry.ui import UI, write_output
        from manifests.errors import UsageError

        from bundler.hubstate import existing_hub_state

        if hub is None:
            raise UsageError("sites: give --hub HUB (see ferry sites --help)")
        existing_hub_state(hub)  # a mistyped folder is not a hub without sites
        model_library(models)
        if not (0 < threshold < float("inf")):  # NaN too: JSON has no Infinity or NaN
            raise UsageError("--threshold must be a number above 0")
        doc = sites_document(hub, models, threshold)
        if html_out is not None:
            write_output(html_out, sites_html(doc).encode(), "--html")
        if json_out:
            UI(json_mode=True).emit(doc)
            return
        from manifests.text import printable

        if not doc["sites"]:
            typer.echo("no sites registered (ferry sites add NAME --key SITE.pub --hub HUB)")
        for s in doc["sites"]:  # what a site reported is its word: never an escape sequence on the terminal
            runs = ", ".join(run_label(r) for r in s["runs"]) or "nothing reported"
            typer.echo(printable(
                f"{s['site']}: last contact {s['lastContact'] or 'never'} (return sequence {s['lastSequence']}); "
                f"runs {runs}; {len(s['pendingUpdates'])} pending update(s); "
                f"{len(s['refusals'])} refusal(s); drift: {'; '.join(s['driftAlerts']) or 'no alert'}"))

    @sites_app.command("add", epilog="Example: ferry sites add site-01 --key site-01.pub --hub /srv/ferry-hub")
    def add_cmd(
        name: str = typer.Argument(..., help="The site's name (its edge's ferry site name)."),
        key: Path = typer.Option(..., "--key", help="The site's public key (ferry keys generate NAME, at the edge)."),
        hub: Path = typer.Option(..., "--hub", "--state", help="The hub state folder, as export --state."),
    ) -> None:
        """Register a site and its public key (one key per site) for return bundles."""
        from bundler.inventory import Inventory
        from manifests.bundle import read_bounded

        pem = read_bounded(key, 64 * 1024, "key file", place="source")
        kid = Inventory(hub).add_site(name, pem)
        typer.echo(f"site {name}: key {kid}")

    app.add_typer(sites_app, name="sites")

    @app.command("aggregate", epilog="Example: ferry aggregate sentiment --base 1.2.0 --version 1.3.0 "
                                     "--out /srv/models/sentiment/1.3.0 --hub /srv/ferry-hub --models /srv/models")
    def aggregate_command(
        model: str = typer.Argument(..., help="The model name."),
        base: str = typer.Option(..., "--base", help="The base version the sites trained from."),
        version: str = typer.Option(..., "--version", help="The new version to write."),
        out: Path = typer.Option(..., "--out", help="The new version folder (new or empty)."),
        hub: Path = typer.Option(..., "--hub", "--state", help="The hub state folder, as export --state (its sites/ inventory)."),
        models: Optional[Path] = typer.Option(None, "--models", help="Model library MODELS/NAME/VERSION/: the base "
                                              "version's layout is checked and its other files copied."),
        trim: int = typer.Option(0, "--trim", help="Robust: coordinate-wise trimmed mean dropping K values each "
                                 "side (needs more than 2K sites); 0 is FedAvg weighted by example counts."),
        max_norm_ratio: Optional[float] = typer.Option(None, "--max-norm-ratio", metavar="R", help="Robust: refuse "
                                                       "(write nothing) if an update's L2 norm, of update - base with "
                                                       "--models, else of the update, is more than R times the median "
                                                       "of the others' (R >= 1; needs 2 sites or more)."),
        exclude: list[str] = typer.Option([], "--exclude", metavar="SITE[=REASON]", help="Leave this site's "
                                          "pending updates out (repeatable); they stay pending for a later "
                                          "aggregation, and provenance.json records the site and the reason."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        """Average the model updates sites returned (FedAvg by example counts) into a new version folder with provenance."""
        from ferry.ui import UI

        result = aggregate_cmd(model, base, version, out, hub, models, trim, max_norm_ratio, exclude)
        if json_out:
            UI(json_mode=True).emit(result)
        else:
            typer.echo(f"{model} {version}: {result['method']} of {len(result['sites'])} site(s) "
                       f"({', '.join(result['sites'])}; {result['examples']} examples), {result['tensors']} tensors -> {out}"
                       + "".join(f"; excluded {x['site']} ({len(x['updates'])} update(s) left pending"
                                 + (f": {x['reason']}" if x['reason'] else "") + ")" for x in result["excluded"]))
