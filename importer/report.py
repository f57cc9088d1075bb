"""The verification report: what ``ferry verify`` found, for auditors to read and file.

One data model, three renderings: JSON (:meth:`Report.to_dict`, format ``ferry-verify-report``
1.0, schema ``manifests/schema/verify-report.schema.json``), a self-contained printable HTML
page (:func:`render_html`: no scripts, no external assets, every text escaped), and the
terminal table in ``ferry.commands.verify``. The JSON field names are camelCase like every ferry
document; docs/auditor-guide.md explains each field.

Versioning: ``formatVersion`` is MAJOR.MINOR. A minor version only adds optional fields; a
reader written for 1.0 reads any 1.x. Removing or changing the meaning of a field makes 2.0.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Literal

REPORT_FORMAT = "ferry-verify-report"
#: 1.1 added host, trust.policy, entries' sha256 (issue #15); 1.2 the check ``plan`` (with
#: ``--state``: fails when the import would refuse an artifact or the whole bundle, as ``import
#: --dry-run`` exits 1; passes as "already imported" for a bundle the import would skip)
REPORT_VERSION = "1.2"

Verdict = Literal["pass", "fail"]
#: Status of one file or blob: rebuilt and matched its digests; rebuilt (or read) and did not;
#: a chunk is on a volume that was not given; its chunks are held by the delta's base (the edge
#: already has them: not carried, so not checked here).
EntryStatus = Literal["ok", "bad", "missing", "held-by-base"]
#: Check names, in the order they run.
CHECKS: tuple[str, ...] = ("medium", "signature-file", "signatures", "manifest", "volumes", "chunks", "content")


@dataclass(frozen=True)
class Check:
    """One check and its outcome; ``reason`` says why it failed (or what passed)."""

    name: str
    ok: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "reason": self.reason}


@dataclass(frozen=True)
class SignerReport:
    keyid: str
    name: str | None  # from the trust policy; None: the key is not trusted
    valid: bool
    counted: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "name": self.name, "valid": self.valid,
                "counted": self.counted, "reason": self.reason}


@dataclass(frozen=True)
class EntryReport:
    """A file (``path``) of a model or manifest set, or a blob (``digest``) of an image."""

    size: int
    blake3: str
    status: EntryStatus
    reason: str
    path: str | None = None
    digest: str | None = None
    media_type: str | None = None
    sha256: str | None = None  # files: ``sha256:<hex>`` of the rebuilt bytes (auditors compare sha256)

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "digest": self.digest, "mediaType": self.media_type,
             "size": self.size, "blake3": self.blake3, "status": self.status, "reason": self.reason}
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        return d

    @property
    def label(self) -> str:
        return self.path or self.digest or self.blake3


@dataclass(frozen=True)
class ChunkCounts:
    total: int = 0
    ok: int = 0
    bad: int = 0
    missing: int = 0
    held_by_base: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "ok": self.ok, "bad": self.bad, "missing": self.missing,
                "heldByBase": self.held_by_base}


@dataclass(frozen=True)
class Plan:
    """What ``ferry import`` would do with this artifact at the edge: the import's plan
    (importer.plan.make_plan), for the volumes given."""

    action: str  # new, same, newer, older, conflict
    reason: str
    installed_version: str | None
    refused: bool
    #: importer.plan.Status: ready, same, refused, failed, waiting, held (report 1.1)
    status: str | None = None
    #: a manifest set at a KubeStellar WEC: per object, apply/keep/skip and by which policy and
    #: clause, then what pruning does (importer.wec.WecResult.plan_lines), and its JSON form
    placement: tuple[str, ...] = ()
    placement_detail: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"action": self.action, "reason": self.reason,
                             "installedVersion": self.installed_version, "refused": self.refused}
        if self.status is not None:
            d["status"] = self.status
        if self.placement_detail is not None:
            d["placement"] = self.placement_detail
        return d


@dataclass(frozen=True)
class ArtifactReport:
    kind: str
    name: str
    version: str
    size: int
    content_digest: str  # manifests.digest.artifact_content_digest
    status: Literal["ok", "bad", "incomplete"]
    chunks: ChunkCounts
    entries: tuple[EntryReport, ...]
    bad_chunks: tuple[tuple[str, str], ...] = ()  # (chunk id, reason), every one found
    image: dict[str, Any] | None = None
    plan: Plan | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "version": self.version, "size": self.size,
            "contentDigest": self.content_digest, "status": self.status,
            "chunks": self.chunks.to_dict(),
            "entries": [e.to_dict() for e in self.entries],
            "badChunks": [{"id": cid, "reason": why} for cid, why in self.bad_chunks],
            "image": self.image,
            "plan": None if self.plan is None else self.plan.to_dict(),
        }


@dataclass(frozen=True)
class BundleReport:
    """One bundle (one manifest digest) and everything checked about it."""

    manifest_digest: str
    locations: tuple[str, ...]
    checks: tuple[Check, ...]
    signers: tuple[SignerReport, ...] = ()
    threshold: int | None = None
    info: dict[str, Any] | None = None  # name, id, channel, sequence, created, producer
    format_version: str | None = None
    volumes_expected: int | None = None
    volumes_missing: tuple[int, ...] = ()
    base: dict[str, Any] | None = None
    artifacts: tuple[ArtifactReport, ...] = ()

    @property
    def verdict(self) -> Verdict:
        return "pass" if all(c.ok for c in self.checks) else "fail"

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def title(self) -> str:
        if self.info:
            return f"{self.info['name']} ({self.info['channel']} #{self.info['sequence']})"
        return f"bundle {self.manifest_digest[:19]}…"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "manifestDigest": self.manifest_digest,
            "locations": list(self.locations),
            "checks": [c.to_dict() for c in self.checks],
            "bundle": self.info,
            "formatVersion": self.format_version,
            "signatures": {"threshold": self.threshold, "signers": [s.to_dict() for s in self.signers]},
            "volumes": {"expected": self.volumes_expected, "missing": list(self.volumes_missing)},
            "base": self.base,
            "artifacts": [a.to_dict() for a in self.artifacts],
        }


@dataclass(frozen=True)
class Report:
    """Everything one ``ferry verify`` run found. ``verdict`` is ``pass`` only when every check
    of every bundle passed and at least one bundle was found."""

    ferry_version: str
    verified_at: str
    inputs: tuple[str, ...]
    trust: dict[str, Any]
    bundles: tuple[BundleReport, ...] = ()
    checks: tuple[Check, ...] = ()  # about the inputs as a whole (e.g. a path holding no bundle)
    state: str | None = None
    host: str | None = None  # the machine that verified (socket.gethostname())

    @property
    def verdict(self) -> Verdict:
        ok = bool(self.bundles) and all(c.ok for c in self.checks) and all(b.verdict == "pass" for b in self.bundles)
        return "pass" if ok else "fail"

    @property
    def failures(self) -> list[tuple[str, Check]]:
        """(where, check) for every failed check, inputs first."""
        out = [("inputs", c) for c in self.checks if not c.ok]
        for b in self.bundles:
            out.extend((b.title, c) for c in b.failures)
        if not self.bundles and not out:
            out.append(("inputs", Check("medium", False, "no bundle found")))
        return out

    @property
    def summary(self) -> str:
        """The one-line verdict."""
        if self.verdict == "pass":
            arts = sum(len(b.artifacts) for b in self.bundles)
            names = ", ".join(b.title for b in self.bundles)
            return f"PASS: {names}: signatures, {arts} artifact(s) and every chunk verified"
        first = self.failures
        more = f" (+{len(first) - 1} more failed check(s))" if len(first) > 1 else ""
        where, check = first[0]
        return f"FAIL: {where}: {check.name}: {check.reason}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "formatVersion": REPORT_VERSION,
            "ferryVersion": self.ferry_version,
            "verifiedAt": self.verified_at,
            **({"host": self.host} if self.host is not None else {}),
            "verdict": self.verdict,
            "summary": self.summary,
            "inputs": list(self.inputs),
            "trust": self.trust,
            "state": self.state,
            "failures": [{"where": where, "check": c.name, "reason": c.reason} for where, c in self.failures],
            "checks": [c.to_dict() for c in self.checks],
            "bundles": [b.to_dict() for b in self.bundles],
        }


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:13px/1.4 "DejaVu Sans",Arial,sans-serif;color:#111;margin:24px;max-width:1100px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 6px;border-bottom:1px solid #999}
h3{font-size:14px;margin:14px 0 4px}
.verdict{font-size:16px;font-weight:bold;padding:8px 12px;border:2px solid;margin:10px 0}
.pass{color:#0a5d1a;border-color:#0a5d1a;background:#eaf6ec}.fail{color:#8b0000;border-color:#8b0000;background:#fbeaea}
table{border-collapse:collapse;width:100%;margin:4px 0 10px;page-break-inside:auto}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee}tr{page-break-inside:avoid}
td.mono,.mono{font-family:"DejaVu Sans Mono",monospace;font-size:11px;word-break:break-all}
.path{font-family:"DejaVu Sans Mono",monospace;font-size:11px;overflow-wrap:anywhere;min-width:14em;display:inline-block}
.ok{color:#0a5d1a}.bad{color:#8b0000;font-weight:bold}.muted{color:#555}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:4px 0}dt{font-weight:bold}dd{margin:0}
@media print{body{margin:0;max-width:none}.verdict{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _status(ok: bool, text: str | None = None) -> str:
    return f'<span class="{"ok" if ok else "bad"}">{_e(text or ("ok" if ok else "FAILED"))}</span>'


def _rows(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _bundle_html(b: BundleReport) -> str:
    parts = [f'<h2>{_e(b.title)} — <span class="{"ok" if b.verdict == "pass" else "bad"}">{_e(b.verdict.upper())}</span></h2>']
    info = b.info or {}
    facts = [("Bundle name", info.get("name")), ("Bundle id", info.get("id")), ("Channel", info.get("channel")),
             ("Sequence", info.get("sequence")), ("Created", info.get("created")),
             ("Expires", info.get("expires") or "never (no signed expiry)"), ("Producer", info.get("producer")),
             ("Format version", b.format_version), ("Manifest digest", b.manifest_digest),
             ("Volumes", None if b.volumes_expected is None else
              f"{b.volumes_expected} expected" + (f", missing: {', '.join(map(str, b.volumes_missing))}"
                                                  if b.volumes_missing else ", all given")),
             ("Delta base", None if not b.base else f"receipt {b.base['receipt']} of site {b.base['site']} "
                                                   f"({b.base['created']})"),
             ("Read from", ", ".join(b.locations))]
    parts.append("<dl>" + "".join(f'<dt>{_e(k)}</dt><dd class="mono">{_e(v if v is not None else "—")}</dd>'
                                  for k, v in facts) + "</dl>")
    parts.append("<h3>Checks</h3>")
    parts.append(_rows(["check", "result", "reason"],
                       [[_e(c.name), _status(c.ok), _e(c.reason)] for c in b.checks]))
    parts.append(f"<h3>Signatures (threshold {_e(b.threshold if b.threshold is not None else '—')})</h3>")
    parts.append(_rows(["key id", "name in trust policy", "valid", "counted", "reason"],
                       [[f'<span class="mono">{_e(s.keyid)}</span>', _e(s.name or "(not trusted)"),
                         _status(s.valid, "yes" if s.valid else "no"),
                         _status(s.counted, "yes" if s.counted else "no"), _e(s.reason)]
                        for s in b.signers] or [[_e("no signatures read"), "", "", "", ""]]))
    if b.artifacts:
        parts.append("<h3>Artifacts</h3>")
        plan = any(a.plan for a in b.artifacts)
        header = ["kind", "name", "version", "size (bytes)", "content digest", "files/blobs",
                  "chunks ok / bad / missing / held by base", "status"] + (["import would"] if plan else [])
        rows = []
        for a in b.artifacts:
            c = a.chunks
            row = [_e(a.kind), _e(a.name), _e(a.version), _e(f"{a.size:,}"),
                   f'<span class="mono">{_e(a.content_digest)}</span>', _e(len(a.entries)),
                   _e(f"{c.ok} / {c.bad} / {c.missing} / {c.held_by_base}"), _status(a.status == "ok", a.status)]
            if plan:
                row.append(_status(not a.plan.refused, f"{a.plan.action}: {a.plan.reason}") if a.plan else "")
            rows.append(row)
        parts.append(_rows(header, rows))
        for a in b.artifacts:
            if a.plan is not None and a.plan.placement:
                parts.append(f"<h3>{_e(a.kind)} {_e(a.name)} {_e(a.version)}: placement at this WEC</h3>")
                parts.append("<pre>" + _e("\n".join(a.plan.placement)) + "</pre>")
        for a in b.artifacts:
            parts.append(f"<h3>{_e(a.kind)} {_e(a.name)} {_e(a.version)}: files and blobs</h3>")
            parts.append(_rows(["path or digest", "size (bytes)", "BLAKE3", "sha256", "status", "reason"],
                               [[f'<span class="path">{_e(e.label)}</span>', _e(f"{e.size:,}"),
                                 f'<span class="mono">{_e(e.blake3)}</span>',
                                 f'<span class="mono">{_e(e.sha256 or e.digest or "—")}</span>',
                                 _status(e.status in ("ok", "held-by-base"), e.status), _e(e.reason)]
                                for e in a.entries]))
            if a.bad_chunks:
                parts.append(_rows(["bad chunk", "reason"],
                                   [[f'<span class="mono">{_e(cid)}</span>', _e(why)] for cid, why in a.bad_chunks]))
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """One self-contained, printable page: inline CSS only, no scripts, nothing fetched."""
    cls = "pass" if report.verdict == "pass" else "fail"
    failures = report.failures
    fail_html = ""
    if failures:
        fail_html = "<h2>Failed checks</h2>" + _rows(
            ["where", "check", "reason"], [[_e(w), _e(c.name), _e(c.reason)] for w, c in failures])
    trust = report.trust
    keys = ", ".join(f"{k.get('name')} ({str(k.get('keyid'))[:16]}…)" + (f" [{k['refused']}]" if k.get("refused") else "")
                     for k in trust.get("keys", []))
    pol = trust.get("policy")
    policy = (f"{pol['policyId']} version {pol['version']}, expires {pol['expires']}" if pol
              else "— (--trust key files, no signed policy)")
    input_checks = (_rows(["check", "result", "reason"], [[_e(c.name), _status(c.ok), _e(c.reason)]
                                                          for c in report.checks]) if report.checks else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>ferry verification report — {_e(report.verdict.upper())}</title>
<style>{_CSS}</style></head>
<body>
<h1>ferry verification report</h1>
<div class="muted">ferry {_e(report.ferry_version)} · verified {_e(report.verified_at)} on {_e(report.host or "?")} ·
report format {_e(REPORT_FORMAT)} {_e(REPORT_VERSION)}</div>
<div class="verdict {cls}">{_e(report.summary)}</div>
<dl><dt>Inputs</dt><dd class="mono">{_e(", ".join(report.inputs))}</dd>
<dt>Trust</dt><dd>{_e(f"threshold {trust.get('threshold')} of {len(trust.get('keys', []))}: {keys}")}</dd>
<dt>Trust policy</dt><dd>{_e(policy)}</dd>
<dt>Edge state</dt><dd class="mono">{_e(report.state or "— (not compared with an edge)")}</dd></dl>
{fail_html}
{input_checks}
{"".join(_bundle_html(b) for b in report.bundles)}
</body></html>
"""
