"""The pull side of the OCI distribution API as pure functions: routes, ranges, catalogs.

``ferry serve`` (:mod:`importer.serve`) answers HTTP with these; nothing here opens a file or
a socket, so every rule is testable alone. Sources of the rules:

- OCI Distribution Specification v1.1, "Pull" (``/v2/``, manifests and blobs by tag or digest,
  ``HEAD``), "Content Discovery" (the tags list with ``n`` and ``last``, the referrers API)
  and "Error Codes" (the ``{"errors": [...]}`` document and its codes).
- RFC 9110 section 14 (``Range`` / ``Content-Range``, 206 and 416).
- OCI Image Layout Specification: ``index.json`` names images with the
  ``org.opencontainers.image.ref.name`` annotation; ferry writes ``REPOSITORY:TAG`` there
  (:mod:`importer.apply.images`), so one layout holds many repositories.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import FormatError, UsageError
from .model import REPOSITORY_RE, TAG_RE
from .oci import INDEXES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST, REF_NAME_ANNOTATION

#: A sha256 digest as ferry serves it: nothing else can name a file (spec: "Pulling blobs").
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
#: Longest repository name accepted (distribution spec: clients SHOULD keep it under 255).
MAX_NAME = 255
#: Most tags one tags-list page returns when the client asks for none or more.
MAX_PAGE = 1000

# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """What a request path asks for.

    ``kind`` is ``"base"`` (``/v2/``), ``"manifest"``, ``"blob"``, ``"tags"`` or ``"referrers"``;
    ``name`` the repository (``None`` for base); ``reference`` a tag or digest (manifests), a
    digest (blobs, referrers) or ``None`` (tags, base).
    """

    kind: str
    name: str | None = None
    reference: str | None = None


class RouteError(Exception):
    """A request the API cannot answer: ``status`` (HTTP), ``code`` (spec error code), message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


_ROUTE_RE = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|referrers)/(?P<ref>[^/]+)\Z")
_TAGS_RE = re.compile(r"^/v2/(?P<name>.+)/tags/list\Z")


def parse_route(path: str) -> Route:
    """The route for a decoded request path (``/v2/NAME/manifests/REF`` ...).

    Args:
        path: the URL path after percent-decoding, without the query string.
    Returns:
        the :class:`Route`.
    Raises:
        RouteError: 404 ``NAME_INVALID`` / ``MANIFEST_UNKNOWN`` / ``DIGEST_INVALID`` for names,
            tags and digests that break the spec's grammar (so no request text ever reaches a
            file name: only a checked sha256 hex does), 404 ``NOT_FOUND`` for other paths.
    """
    if path in ("/v2", "/v2/"):
        return Route("base")
    match = _ROUTE_RE.match(path)
    kind = None
    if match:
        kind = {"manifests": "manifest", "blobs": "blob", "referrers": "referrers"}[match["kind"]]
    else:
        match = _TAGS_RE.match(path)
        if match:
            kind = "tags"
    if match is None or kind is None:
        raise RouteError(404, "NOT_FOUND", "no such endpoint (this is a read-only OCI distribution API)")
    name = match["name"]
    if len(name) > MAX_NAME or not REPOSITORY_RE.match(name):
        raise RouteError(404, "NAME_INVALID", "invalid repository name")
    if kind == "tags":
        return Route("tags", name)
    ref = match["ref"]
    if kind == "manifest":
        if DIGEST_RE.match(ref) or TAG_RE.match(ref):
            return Route(kind, name, ref)
        if ":" in ref:
            raise RouteError(400, "DIGEST_INVALID", "only sha256 digests are served")
        raise RouteError(404, "MANIFEST_UNKNOWN", "invalid tag")
    if not DIGEST_RE.match(ref):
        raise RouteError(400, "DIGEST_INVALID", "not a sha256 digest")
    return Route(kind, name, ref)


def error_body(code: str, message: str) -> bytes:
    """The spec's error document: ``{"errors": [{"code", "message", "detail"}]}`` as bytes."""
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


# --------------------------------------------------------------------------- ranges


class RangeNotSatisfiable(Exception):
    """The Range cannot be served (RFC 9110 §15.5.17): answer 416 with ``bytes */SIZE``."""


_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*\Z", re.IGNORECASE)
_MAX_DIGITS = 20  # 2**64 has 20 digits: longer numbers are past any file's end


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range a ``Range`` header asks of a ``size``-byte blob (RFC 9110 §14.1.2, §14.2).

    Args:
        header: the Range header's value, or None when absent.
        size: the blob's length in bytes (>= 0).
    Returns:
        ``(first, last)`` inclusive byte offsets with ``0 <= first <= last < size``, or None to
        serve the whole blob (no header; another unit; several ranges, which RFC 9110 lets a
        server ignore and no OCI client sends).
    Raises:
        RangeNotSatisfiable: a malformed single ``bytes=`` range, a first byte at or past the
            end, ``last < first``, a zero suffix, or any range of an empty blob.
    """
    if header is None:
        return None
    unit, sep, _ = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    if "," in header:
        return None
    match = _RANGE_RE.match(header)
    if not match or (not match[1] and not match[2]):
        raise RangeNotSatisfiable(f"malformed range {header[:80]!r}")
    first_text, last_text = match[1], match[2]
    if size == 0:
        raise RangeNotSatisfiable("the blob is empty")
    if not first_text:  # suffix: the last N bytes
        if len(last_text) > _MAX_DIGITS:
            return (0, size - 1)
        suffix = int(last_text)
        if suffix == 0:
            raise RangeNotSatisfiable("a zero-length suffix range")
        return (max(0, size - suffix), size - 1)
    if len(first_text) > _MAX_DIGITS:
        raise RangeNotSatisfiable("range starts past the end")
    first = int(first_text)
    if first >= size:
        raise RangeNotSatisfiable("range starts past the end")
    if not last_text or len(last_text) > _MAX_DIGITS:
        return (first, size - 1)
    last = int(last_text)
    if last < first:
        raise RangeNotSatisfiable("range ends before it starts")
    return (first, min(last, size - 1))


# --------------------------------------------------------------------------- catalog


@dataclass
class Repository:
    """What one repository of a layout holds: tags, and every manifest and blob they reach."""

    tags: dict[str, str] = field(default_factory=dict)            # tag -> manifest digest
    manifests: dict[str, str] = field(default_factory=dict)       # digest -> media type
    blobs: set[str] = field(default_factory=set)
    referrers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # subject -> descriptors


@dataclass
class _Doc:
    media_type: str
    children: list[tuple[str, str]]          # (digest, media type) of child manifests
    blobs: list[str]
    subject: str | None
    artifact_type: str | None
    annotations: dict[str, str]


def _read_doc(digest: str, media_type: str | None, data: bytes) -> _Doc:
    """The parts of a manifest the catalog needs (any artifact type: ModelPack too)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FormatError(f"manifest {digest} is not JSON") from None
    if not isinstance(doc, dict):
        raise FormatError(f"manifest {digest} is not a JSON object")
    declared = doc.get("mediaType")
    kind = declared if isinstance(declared, str) and declared else (media_type or (
        OCI_INDEX if "manifests" in doc else OCI_MANIFEST))
    if kind not in MANIFEST_TYPES:
        raise FormatError(f"manifest {digest} has media type {kind!r}")
    children: list[tuple[str, str]] = []
    blobs: list[str] = []

    def desc(value: Any) -> tuple[str, str] | None:
        if isinstance(value, dict) and isinstance(value.get("digest"), str) and DIGEST_RE.match(value["digest"]):
            mt = value.get("mediaType")
            return value["digest"], mt if isinstance(mt, str) else ""
        return None

    if kind in INDEXES:
        for d in doc.get("manifests") or []:
            got = desc(d)
            if got:
                children.append(got)
    else:
        for d in [doc.get("config"), *(doc.get("layers") or [])]:
            got = desc(d)
            if got:
                blobs.append(got[0])
    subject = desc(doc.get("subject"))
    artifact_type = doc.get("artifactType")
    if not isinstance(artifact_type, str):
        config = doc.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
        if not isinstance(artifact_type, str):
            artifact_type = None
    ann = doc.get("annotations")
    annotations = {k: v for k, v in ann.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(ann, dict) else {}
    return _Doc(kind, children, blobs, subject[0] if subject else None, artifact_type, annotations)


def split_ref_name(ref_name: str) -> tuple[str, str] | None:
    """``REPOSITORY:TAG`` from a layout's ref.name annotation, or None for a bare tag."""
    repo, sep, tag = ref_name.rpartition(":")
    if not sep or "/" in tag or not REPOSITORY_RE.match(repo) or not TAG_RE.match(tag):
        return None
    return repo, tag


def build_catalog(index: bytes, read_manifest: Callable[[str], bytes]) -> dict[str, Repository]:
    """Every repository a layout's ``index.json`` names, with what each may serve.

    A repository holds the manifests its tags reach (index children too), their config and
    layer blobs, and the manifests in ``index.json`` whose ``subject`` it holds (referrers,
    OCI image spec v1.1 "subject"), and what those reach in turn. Nothing else is served
    under its name: a digest known to the layout but not to the repository is unknown there,
    as in a registry.

    Args:
        index: the bytes of the layout's ``index.json``.
        read_manifest: returns a manifest's verified bytes by digest; raises FormatError
            (or OSError) when it is missing or damaged. Such manifests are left out.
    Returns:
        repository name -> :class:`Repository`.
    Raises:
        FormatError: ``index.json`` is not an OCI index.
    """
    docs: dict[str, _Doc | None] = {}

    def load(digest: str, media_type: str | None) -> _Doc | None:
        if digest not in docs:
            try:
                docs[digest] = _read_doc(digest, media_type, read_manifest(digest))
            except (FormatError, OSError):
                docs[digest] = None
        return docs[digest]

    top = _read_doc("index.json", OCI_INDEX, index)
    if top.media_type not in INDEXES:
        raise FormatError("index.json is not an OCI image index")
    try:
        entries = json.loads(index).get("manifests") or []
    except (ValueError, AttributeError):
        raise FormatError("index.json is not an OCI image index") from None
    repos: dict[str, Repository] = {}
    untagged: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str) \
                or not DIGEST_RE.match(entry["digest"]):
            continue
        raw_type = entry.get("mediaType")
        media_type: str = raw_type if isinstance(raw_type, str) else OCI_MANIFEST
        raw_ann = entry.get("annotations")
        ref_name = raw_ann.get(REF_NAME_ANNOTATION) if isinstance(raw_ann, dict) else None
        parsed = split_ref_name(ref_name) if isinstance(ref_name, str) else None
        if parsed is None:
            untagged.append((entry["digest"], media_type))
            continue
        name, tag = parsed
        repo = repos.setdefault(name, Repository())
        if _reach(repo, entry["digest"], media_type, load):
            repo.tags[tag] = entry["digest"]
    candidates = [(d, mt) for d, mt in untagged] + [
        (d, mt) for r in repos.values() for d, mt in list(r.manifests.items())]
    for repo in repos.values():
        changed = True
        while changed:  # referrers of referrers, until nothing new joins
            changed = False
            for digest, media_type in candidates:
                doc = load(digest, media_type)
                if doc is None or doc.subject is None or doc.subject not in repo.manifests:
                    continue
                listed = repo.referrers.setdefault(doc.subject, [])
                if any(d["digest"] == digest for d in listed):
                    continue
                if digest not in repo.manifests and not _reach(repo, digest, media_type, load):
                    continue
                descriptor: dict[str, Any] = {"mediaType": doc.media_type, "digest": digest,
                                              "size": len(read_manifest(digest))}
                if doc.artifact_type:
                    descriptor["artifactType"] = doc.artifact_type
                if doc.annotations:
                    descriptor["annotations"] = doc.annotations
                listed.append(descriptor)
                changed = True
    return repos


def _reach(repo: Repository, digest: str, media_type: str,
           load: Callable[[str, str | None], _Doc | None]) -> bool:
    """Add ``digest`` and all it references to ``repo``; False if a manifest is unreadable."""
    pending = [(digest, media_type)]
    found: dict[str, str] = {}
    blobs: set[str] = set()
    while pending:
        d, mt = pending.pop()
        if d in found or d in repo.manifests:
            continue
        doc = load(d, mt or None)
        if doc is None:
            return False
        found[d] = doc.media_type
        blobs.update(doc.blobs)
        pending.extend(doc.children)
    repo.manifests.update(found)
    repo.blobs |= blobs
    return True


def tags_page(name: str, tags: Iterable[str], n: str | None, last: str | None) -> tuple[dict[str, Any], str | None]:
    """One page of the tags list (spec: "Listing Tags"), in lexical order.

    Args:
        name: the repository.
        tags: all its tags.
        n: the ``n`` query parameter (most tags wanted), or None.
        last: the ``last`` query parameter (answer only tags after it), or None.
    Returns:
        (the document ``{"name", "tags"}``, the ``last`` value of the next page or None when
        this page ends the list).
    Raises:
        UsageError: ``n`` is not a non-negative integer.
    """
    ordered = sorted(tags)
    if last:
        ordered = [t for t in ordered if t > last]
    limit = MAX_PAGE
    if n is not None:
        if not (n.isascii() and n.isdigit()) or len(n) > 9:  # int() refuses superscripts isdigit() accepts
            raise UsageError(f"n={n[:20]!r} is not a count")
        limit = min(int(n), MAX_PAGE)
    page = ordered[:limit]
    more = page[-1] if len(ordered) > limit and page else None
    return {"name": name, "tags": page}, more


def referrers_index(descriptors: list[dict[str, Any]], artifact_type: str | None) -> bytes:
    """The referrers API answer: an OCI image index of ``descriptors``, filtered by
    ``artifactType`` when given (spec: "Listing Referrers")."""
    chosen = [d for d in descriptors if artifact_type is None or d.get("artifactType") == artifact_type]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": chosen}).encode()
