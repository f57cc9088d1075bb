"""The return path's documents (site -> hub): ``return.json`` and drift summaries, and PSI.

Pure: parsing and checking bytes already read, and arithmetic. The format is
docs/bundle-format.md section 13 (13.1 the return document, 13.2 drift summaries). Both are
plain JSON (metrics and histogram edges are real numbers), bounded in size and shape before
anything else reads them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import FormatError, LimitError
from .model import NAME_RE, check_format
from .text import UTC_TIME_RE, forbidden_char, parse_utc
from .version import parse_version

RETURN_FORMAT = "ferry-return"
DRIFT_FORMAT = "ferry-drift"
DOC_VERSION = "1.0"
#: Name of the artifact that carries the report in every return bundle (§13).
RETURN_ARTIFACT = "ferry-return"
RETURN_ARTIFACT_VERSION = "1.0.0"
MAX_DOC_BYTES = 4 * 1024 * 1024  # return.json and each drift summary (§13.1, §13.2)
MAX_FEATURES = 1000
MAX_BINS = 1000
#: Share floor of a PSI bin, so that an empty bin does not make the index infinite (§13.2).
PSI_FLOOR = 1e-4
#: A feature at or above this PSI is flagged as drifting (§13.2; 0.1-0.2 is usually read as a moderate shift).
PSI_THRESHOLD = 0.2
GENESIS = "sha256:" + "0" * 64


def _json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_DOC_BYTES:
        raise LimitError(f"{what} is {len(data)} bytes, over the limit of {MAX_DOC_BYTES}")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FormatError(f"{what} is not JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{what} must be a JSON object")
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise FormatError(f"{where} must be a name (letters, digits, '.', '_', '-'; at most 128)")
    return value


@dataclass(frozen=True)
class ModelUpdate:
    """One model update a site returns: full weights trained from ``base`` on ``examples`` examples."""

    model: str
    base: str
    examples: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "base": self.base, "examples": self.examples, "metrics": dict(self.metrics)}


@dataclass(frozen=True)
class ReturnDoc:
    """``return.json`` (docs/bundle-format.md §13.1)."""

    site: str
    created: str
    audit_from: int
    audit_count: int
    updates: tuple[ModelUpdate, ...] = ()
    metrics: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        return json.dumps({
            "format": RETURN_FORMAT, "formatVersion": DOC_VERSION, "site": self.site, "created": self.created,
            "audit": {"from": self.audit_from, "count": self.audit_count},
            "updates": [u.to_dict() for u in self.updates],
            "metrics": list(self.metrics), "drift": list(self.drift)}, sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReturnDoc:
        """Parse ``return.json``.

        Args:
            data: the file's bytes (at most 4 MiB).
        Returns:
            The document.
        Raises:
            LimitError: over 4 MiB. FormatError: not a ``ferry-return`` 1.x document, or a field
            of the wrong shape (§13.1).
        """
        doc = _json(data, "return.json")
        check_format(doc.get("format"), doc.get("formatVersion"), RETURN_FORMAT, "return.json")
        site = _name(doc.get("site"), "return.json site")
        created = doc.get("created")
        if not isinstance(created, str) or not UTC_TIME_RE.match(created):
            raise FormatError("return.json created must be a UTC time like 2026-01-31T12:00:00Z")
        parse_utc(created, where="return.json created")
        audit = doc.get("audit")
        if not isinstance(audit, dict) or not all(_count(audit.get(k)) for k in ("from", "count")):
            raise FormatError("return.json audit must be {from, count}, whole numbers >= 0")
        updates = []
        raw = doc.get("updates", [])
        if not isinstance(raw, list) or len(raw) > MAX_FEATURES:
            raise FormatError("return.json updates must be a list")
        seen: set[str] = set()
        for i, u in enumerate(raw):
            where = f"return.json updates[{i}]"
            if not isinstance(u, dict):
                raise FormatError(f"{where} must be an object")
            model = _name(u.get("model"), f"{where}.model")
            if model in seen:
                raise FormatError(f"{where}: model {model} is updated twice")
            seen.add(model)
            base = u.get("base")
            if not isinstance(base, str):
                raise FormatError(f"{where}.base must be a version")
            parse_version(base, where=f"{where}.base")
            examples = u.get("examples")
            if not isinstance(examples, int) or isinstance(examples, bool) or not 1 <= examples <= 2**53 - 1:
                raise FormatError(f"{where}.examples must be a whole number >= 1")
            metrics = u.get("metrics", {})
            if not isinstance(metrics, dict):
                raise FormatError(f"{where}.metrics must be an object")
            updates.append(ModelUpdate(model, base, examples, metrics))
        lists = []
        for key in ("metrics", "drift"):
            value = doc.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and not forbidden_char(v) for v in value):
                raise FormatError(f"return.json {key} must be a list of paths")
            lists.append(tuple(value))
        return cls(site=site, created=created, audit_from=audit["from"], audit_count=audit["count"],
                    updates=tuple(updates), metrics=lists[0], drift=lists[1])


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53 - 1


@dataclass(frozen=True)
class Histogram:
    """One feature's histogram: ``edges`` (n+1 increasing numbers) and ``counts`` (n integers)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class DriftSummary:
    """A ``ferry-drift`` document (§13.2): per-feature histograms of one model version's inputs."""

    model: str
    version: str
    features: dict[str, Histogram]


def parse_drift(data: bytes, what: str = "drift summary") -> DriftSummary:
    """Parse and check a drift summary or a model's ``drift-reference.json``.

    Args:
        data: the file's bytes (at most 4 MiB).
        what: how to name the file in errors.
    Returns:
        The summary.
    Raises:
        LimitError: over 4 MiB, 1,000 features or 1,000 bins. FormatError: not ``ferry-drift``
        1.x, edges not finite and strictly increasing, counts not n whole numbers >= 0 with a
        positive total (docs/bundle-format.md §13.2).
    """
    doc = _json(data, what)
    check_format(doc.get("format"), doc.get("formatVersion"), DRIFT_FORMAT, what)
    model = _name(doc.get("model"), f"{what} model")
    version = doc.get("version")
    if not isinstance(version, str):
        raise FormatError(f"{what} version must be a version")
    parse_version(version, where=f"{what} version")
    features = doc.get("features")
    if not isinstance(features, dict) or not features:
        raise FormatError(f"{what} features must be a non-empty object")
    if len(features) > MAX_FEATURES:
        raise LimitError(f"{what} has {len(features)} features, over the limit of {MAX_FEATURES}")
    out: dict[str, Histogram] = {}
    for name, h in features.items():
        where = f"{what} feature {_name(name, f'{what} feature name')}"
        if not isinstance(h, dict) or set(h) != {"edges", "counts"}:
            raise FormatError(f"{where} must be {{edges, counts}}")
        edges, counts = h["edges"], h["counts"]
        if not isinstance(edges, list) or not isinstance(counts, list):
            raise FormatError(f"{where}: edges and counts must be lists")
        if len(counts) > MAX_BINS:
            raise LimitError(f"{where} has {len(counts)} bins, over the limit of {MAX_BINS}")
        if len(counts) < 1 or len(edges) != len(counts) + 1:
            raise FormatError(f"{where}: {len(counts)} bins need {len(counts) + 1} edges, not {len(edges)}")
        if not all(isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) for e in edges):
            raise FormatError(f"{where}: edges must be finite numbers")
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise FormatError(f"{where}: edges must be strictly increasing")
        if not all(_count(c) for c in counts) or sum(counts) == 0:
            raise FormatError(f"{where}: counts must be whole numbers >= 0, not all zero")
        out[name] = Histogram(tuple(float(e) for e in edges), tuple(counts))
    return DriftSummary(model=model, version=version, features=out)


def psi(observed: Histogram, reference: Histogram) -> float | None:
    """Population stability index of ``observed`` against ``reference`` (docs/bundle-format.md §13.2).

    ``PSI = sum((p_i - q_i) * ln(p_i / q_i))`` with p the observed and q the reference shares
    per bin, each floored at :data:`PSI_FLOOR` (Siddiqi, *Credit Risk Scorecards*, 2006, ch. 8).

    Args:
        observed, reference: histograms over the same bins.
    Returns:
        The index (>= 0; 0 for identical shares), or None when the bin edges differ (not comparable).
    """
    if observed.edges != reference.edges:
        return None
    n_obs, n_ref = sum(observed.counts), sum(reference.counts)
    total = 0.0
    for o, r in zip(observed.counts, reference.counts):
        p = max(o / n_obs, PSI_FLOOR)
        q = max(r / n_ref, PSI_FLOOR)
        total += (p - q) * math.log(p / q)
    return total


def drift_report(site: DriftSummary, reference: DriftSummary, threshold: float = PSI_THRESHOLD) -> list[dict[str, Any]]:
    """Per feature of ``site``: its PSI against ``reference`` and whether it is flagged.

    Returns:
        ``[{"feature", "psi" (float or None), "flag" (bool), "note"}]`` sorted by feature;
        ``note`` says why a feature was not compared (absent from the reference, other edges).
    """
    rows: list[dict[str, Any]] = []
    for name in sorted(site.features):
        ref = reference.features.get(name)
        if ref is None:
            rows.append({"feature": name, "psi": None, "flag": False, "note": "not in the reference"})
            continue
        value = psi(site.features[name], ref)
        rows.append({"feature": name, "psi": value, "flag": value is not None and value >= threshold,
                     "note": None if value is not None else "bin edges differ from the reference"})
    return rows
