"""The edge's side of the return path: the return spec, and the folder a return bundle is cut from.

``ferry return export`` (docs/operator-guide.md, "The return path") reads a return spec
(``apiVersion: ferry/v1``, ``kind: Return``), gathers the site's receipt and status (given by
the command line, which owns those documents), the audit entries since the last return bundle,
the model updates, metrics files and drift summaries into a staging folder laid out as
docs/bundle-format.md section 13 says, and hands it to the hub's bundle writer. The edge
remembers, in ``EDGE/return/sent.json``, the first audit entry the next return bundle carries.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from manifests import canonical
from manifests.bundle import read_bounded
from manifests.durable import make_dirs, write_atomic
from manifests.errors import FerryError, FormatError, PlaceError, SpecError
from manifests.model import NAME_RE, utc_now
from manifests.modelpack import safetensors_facts, safetensors_header_length
from manifests.returns import MAX_DOC_BYTES, ModelUpdate, ReturnDoc, parse_drift
from manifests.version import parse_version

from .audit import AuditTrail

RETURN_DIR = "return"
SENT_NAME = "sent.json"
MAX_SPEC_BYTES = 1024 * 1024
MAX_METRICS_FILES = 1000


@dataclass(frozen=True)
class UpdateItem:
    update: ModelUpdate
    path: Path


@dataclass(frozen=True)
class ReturnSpec:
    """A parsed return spec: model updates, a metrics folder (optional), drift files."""

    file: Path
    updates: tuple[UpdateItem, ...] = ()
    metrics: Path | None = None
    drift: tuple[Path, ...] = ()


def load_return_spec(path: Path) -> ReturnSpec:
    """Read and check a return spec (docs/operator-guide.md, "The return path").

    Args:
        path: the YAML file; relative paths in it are relative to its folder.
    Returns:
        The spec, paths absolute and existing; drift summaries already parsed once (so a
        malformed one is refused before anything is written).
    Raises:
        SpecError: not YAML, unknown or missing fields, a path that does not exist, a bad
        version or example count, an update file that is not safetensors, a malformed drift
        summary (naming file and field).
    """
    data = read_bounded(path, MAX_SPEC_BYTES, "return spec", place="source")
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    from manifests.yamldoc import check_expanded

    check_expanded(doc, str(path))

    def fail(where: str, problem: str) -> SpecError:
        return SpecError(f"{path}: {where} {problem}")

    def fields(value: Any, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise fail(where, "must be a mapping")
        for k in value:
            if k not in allowed:
                raise fail(f"{where}.{k}", f"is not a known field (allowed: {', '.join(sorted(allowed))})")
        for k in required:
            if value.get(k) is None:
                raise fail(f"{where}.{k}", "is required")
        return value

    def existing(text: Any, where: str) -> Path:
        if not isinstance(text, str) or not text:
            raise fail(where, "must be a path")
        p = Path(text).expanduser()
        p = p if p.is_absolute() else path.parent / p
        if not p.exists():
            raise fail(where, f"{text!r}: not found ({p})")
        return p

    top = fields(doc, "", {"apiVersion", "kind", "spec"}, {"apiVersion", "kind", "spec"})
    if top["apiVersion"] != "ferry/v1" or top["kind"] != "Return":
        raise fail("kind", "must be apiVersion ferry/v1, kind Return")
    spec = fields(top["spec"], "spec", {"updates", "metrics", "drift"}, set())
    updates = []
    raw = spec.get("updates") or []
    if not isinstance(raw, list):
        raise fail("spec.updates", "must be a list")
    seen: set[str] = set()
    for i, u in enumerate(raw):
        where = f"spec.updates[{i}]"
        d = fields(u, where, {"model", "base", "path", "examples", "metrics"}, {"model", "base", "path", "examples"})
        model, base, examples = d["model"], d["base"], d["examples"]
        if not isinstance(model, str) or not NAME_RE.match(model) or model == "ferry-return":
            raise fail(f"{where}.model", "must be a model name")
        if model in seen:
            raise fail(f"{where}.model", f"{model!r} is listed twice: one update per model")
        seen.add(model)
        try:
            parse_version(str(base) if isinstance(base, str) else "")
        except FerryError:
            raise fail(f"{where}.base", f"{base!r} is not a semantic version (quote it)") from None
        if not isinstance(examples, int) or isinstance(examples, bool) or examples < 1:
            raise fail(f"{where}.examples", "must be a whole number >= 1 (training examples)")
        metrics = d.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise fail(f"{where}.metrics", "must be a mapping")
        try:
            json.dumps(metrics, allow_nan=False)
        except (TypeError, ValueError):
            raise fail(f"{where}.metrics", "must hold numbers, strings, lists and mappings only") from None
        file = existing(d["path"], f"{where}.path")
        if not file.is_file():
            raise fail(f"{where}.path", "must be a safetensors file")
        try:
            _check_safetensors(file)
        except FormatError as exc:
            raise fail(f"{where}.path", f"{d['path']!r} is not a safetensors file: {exc}") from None
        updates.append(UpdateItem(ModelUpdate(model, base, examples, metrics), file))
    metrics_dir = existing(spec["metrics"], "spec.metrics") if spec.get("metrics") is not None else None
    if metrics_dir is not None and not metrics_dir.is_dir():
        raise fail("spec.metrics", "must be a folder")
    drift = []
    raw = spec.get("drift") or []
    if not isinstance(raw, list):
        raise fail("spec.drift", "must be a list of files")
    for i, text in enumerate(raw):
        p = existing(text, f"spec.drift[{i}]")
        try:
            parse_drift(read_bounded(p, MAX_DOC_BYTES, "drift summary", place="source"), f"drift summary {p}")
        except FerryError as exc:
            raise fail(f"spec.drift[{i}]", str(exc)) from None
        drift.append(p)
    if len({p.name for p in drift}) != len(drift):
        raise fail("spec.drift", "lists two files of the same name")
    return ReturnSpec(file=path, updates=tuple(updates), metrics=metrics_dir, drift=tuple(drift))


def _check_safetensors(file: Path) -> None:
    """Refuse an update file that is not safetensors before anything is written (the hub
    would refuse it only after the return bundle travelled; docs/bundle-format.md section 13:
    an update is the full trained weights as one safetensors file).

    Args:
        file: the update's weights file.
    Raises:
        FormatError: the 8-byte header length or the JSON header is not safetensors'.
        PlaceError: the file cannot be read.
    """
    try:
        with open(file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            length = safetensors_header_length(f.read(8))
            if length > size - 8:
                raise FormatError(f"safetensors header of {length} bytes is longer than the file ({size} bytes)")
            safetensors_facts(f.read(length))
    except OSError as exc:
        raise PlaceError("source", str(file), f"{file}: cannot read ({exc.strerror or exc})") from None


def audit_from(state_dir: Path) -> int:
    """The first audit entry the next return bundle carries (0 before the first)."""
    path = state_dir / RETURN_DIR / SENT_NAME
    if not path.exists():
        return 0
    try:
        value = json.loads(path.read_bytes())["auditNext"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PlaceError("state", str(path), f"edge state {path}: unreadable ({exc}); fix or remove it") from None
    if not isinstance(value, int) or value < 0:
        raise PlaceError("state", str(path), f"edge state {path}: auditNext is not a whole number")
    return value


def mark_sent(state_dir: Path, audit_next: int) -> None:
    """Remember that audit entries before ``audit_next`` went out in a return bundle."""
    make_dirs(state_dir / RETURN_DIR)
    write_atomic(state_dir / RETURN_DIR / SENT_NAME, json.dumps({"auditNext": audit_next}).encode())


def stage(state_dir: Path, spec: ReturnSpec, staging: Path, *, site: str, receipt: bytes,
          status: dict[str, Any], first: int) -> tuple[ReturnDoc, int]:
    """Lay out a return bundle's files in ``staging`` (replaced): ``report/`` and ``updates/<model>/``.

    Args:
        state_dir: the edge state (its audit trail is read). spec: the parsed return spec.
        staging: a folder to (re)create. site: the site's name. receipt: the receipt bytes.
        status: the status document (``ferry status --json``); refusals from the trail are added.
        first: the first audit entry to carry.
    Returns:
        The return document written and the audit seq the next return bundle starts at.
    Raises:
        PlaceError: the trail is broken (``ferry audit verify`` says how) or the staging folder
        cannot be written. FormatError: an unreadable trail entry.
    """
    trail = AuditTrail(state_dir)
    check = trail.verify()
    if not check.ok:
        raise PlaceError("state", str(state_dir), f"edge state {state_dir}: the audit trail is not whole "
                                                  f"({check.summary}); the hub would refuse it (ferry audit verify --state)")
    lines: list[bytes] = []
    refusals: list[dict[str, Any]] = []
    for entry in trail.entries():
        if entry["decision"] == "refused":
            refusals.append({"time": entry["time"], "reason": entry["reason"][:300],
                             "bundle": (entry["bundle"] or {}).get("name")})
        if entry["seq"] >= first:
            lines.append(canonical.encode(entry) + b"\n")
    if staging.exists():
        shutil.rmtree(staging)
    report = staging / "report"
    make_dirs(report)
    write_atomic(report / "receipt.json", receipt, "state")
    write_atomic(report / "status.json",
                 json.dumps({**status, "refusals": refusals[-50:]}, sort_keys=True, indent=1).encode(), "state")
    write_atomic(report / "audit.jsonl", b"".join(lines), "state")
    metrics: list[str] = []
    if spec.metrics is not None:
        files = sorted(p for p in spec.metrics.rglob("*") if p.is_file() and not p.is_symlink())
        if len(files) > MAX_METRICS_FILES:
            raise SpecError(f"{spec.file}: spec.metrics holds {len(files)} files, over {MAX_METRICS_FILES}")
        for p in files:
            rel = "metrics/" + p.relative_to(spec.metrics).as_posix()
            make_dirs((report / rel).parent)
            shutil.copyfile(p, report / rel)
            metrics.append(rel)
    drift = []
    for p in spec.drift:
        make_dirs(report / "drift")
        shutil.copyfile(p, report / "drift" / p.name)
        drift.append(f"drift/{p.name}")
    for u in spec.updates:
        make_dirs(staging / "updates" / u.update.model)
        shutil.copyfile(u.path, staging / "updates" / u.update.model / "model.safetensors")
    count = len(lines)
    doc = ReturnDoc(site=site, created=utc_now(), audit_from=first, audit_count=count,
                    updates=tuple(u.update for u in spec.updates), metrics=tuple(metrics), drift=tuple(drift))
    write_atomic(report / "return.json", doc.to_bytes(), "state")
    return doc, first + count
