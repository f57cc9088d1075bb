"""The edge's tamper-evident audit trail: one hash-chained JSON line per import decision.

Layout under the state folder::

    audit/trail.jsonl   one entry per line, each the canonical JSON of the entry
    audit/head.json     {"format": "ferry-audit-head", "seq": N, "hash": "<hash of entry N>"}
    audit/.lock         flock'd while appending, so two appends never interleave

An entry (JSON field names camelCase, as in every ferry document)::

    {"seq": 0, "time": "2026-01-31T12:00:00Z", "decision": "applied", "reason": "...",
     "bundle": {...} | null, "manifestDigest": "sha256:..." | null, "signers": ["<keyid>", ...],
     "artifact": {...} | null, "versionBefore": "1.0.0" | null, "versionAfter": "1.1.0" | null,
     "note": "..." | null, "prev": "sha256:...", "hash": "sha256:..."}

``hash`` is ``sha256:`` + hex sha256 of the canonical JSON (manifests.canonical) of the entry
without ``hash``; ``prev`` is the hash of the entry before, or :data:`GENESIS` for the first;
``seq`` is the entry's index. Editing an entry breaks its hash, removing or reordering entries
breaks ``seq`` and ``prev``, and the head kept apart in ``head.json`` catches removal of the
last entries (which leaves a chain that is whole but shorter).

Decisions (:data:`DECISIONS`): ``applied`` (installed), ``skipped`` (already present, nothing to
do), ``refused`` (bad signature, untrusted signer, tampered chunk, downgrade, conflict, stale
sequence: the reason says which), ``downgrade-forced`` (an older version installed because the
operator allowed it; the note carries the operator's reason), ``trust-pinned`` and
``trust-updated`` (the site's signed trust policy was pinned or replaced: ``artifact`` names the
policy, ``versionBefore``/``versionAfter`` its versions, ``signers`` who signed the new one;
importer.trust_store). A refused policy update is a ``refused`` entry, ``site-changed`` (``ferry site set``
changed the site's WEC name, labels or cluster; the reason shows before and after), ``watch``
(``ferry watch`` picked a bundle up, waits for one to settle or complete, or backs off from a
failing registry; the reason says which and names the folder or reference; importer.watch),
``published`` (a model version published as OCI artifacts: the reason names the place, the
repository, and each tag with its digest; importer.apply.modelpack) and ``unpublished`` (those
artifacts removed when ``--keep N`` pruned the version; the reason names what was removed).

Crash safety. An append writes the line and fsyncs the trail, *then* replaces the head
atomically. A crash in between leaves one of two states, both recognised and healed by the next
append (and reported by :meth:`AuditTrail.verify` as ``ok`` with ``pending`` set):

- the head is behind by exactly one entry and that last entry links to the head and hashes
  correctly: the append completed except for the head; the next append first moves the head;
- the trail ends in a partial line (no newline) after the entry the head names: the append
  never completed; the next append cuts those bytes off (they were never a committed entry).

A partial line *inside* what the head covers is reported as ``truncated``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from manifests import canonical
from manifests.errors import FerryError, FormatError, PlaceError, UsageError
from manifests.model import utc_now

AUDIT_DIR = "audit"
TRAIL_NAME = "trail.jsonl"
HEAD_NAME = "head.json"
LOCK_NAME = ".lock"
HEAD_FORMAT = "ferry-audit-head"

#: ``prev`` of the first entry.
GENESIS = "sha256:" + "0" * 64

#: Every decision an entry may record (see the module docstring).
DECISIONS: tuple[str, ...] = ("applied", "skipped", "refused", "downgrade-forced", "trust-pinned", "trust-updated",
                             "site-changed", "watch", "published", "unpublished")

#: Why a trail failed verification, in :attr:`AuditCheck.reason`.
#: ``edited``: an entry's bytes no longer match its hash, it does not link to the entry before,
#: or the head's hash differs from the entry it names (the chain was rewritten);
#: ``removed``: entries are missing (a gap, a first entry that does not start from genesis, or
#: a head naming entries past the end); ``reordered``: an entry sits before its place;
#: ``truncated``: the file ends inside an entry the head covers; ``head``: the head record is
#: missing, unreadable, or more than one entry behind.
REASONS: tuple[str, ...] = ("edited", "removed", "reordered", "truncated", "head")

#: Fields of an entry, in the order a table shows them. ``hash`` is computed over all but itself.
ENTRY_FIELDS: tuple[str, ...] = ("seq", "time", "decision", "reason", "bundle", "manifestDigest",
                                 "signers", "artifact", "versionBefore", "versionAfter", "note",
                                 "prev", "hash")

#: Largest line accepted when reading a trail (an entry is small; a hostile file is not read whole).
MAX_LINE_BYTES = 1 << 20
MAX_TEXT = 4096


def fit_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` as an entry can hold it: at most ``limit`` characters, valid Unicode.

    Args:
        text: a reason or note (a refusal may quote a 4,096-byte path, or a file name that is
            not UTF-8 and so holds lone surrogates).
        limit: characters (code points) the result may have; at least 200.
    Returns:
        ``text`` itself when it fits; otherwise its beginning followed by the marker
        ``… [truncated: N characters; sha256:<hex> of the full text]``, so the entry still
        names what was cut and anyone holding the full message (the import's report) can
        prove it is the one recorded. Lone surrogates become ``\\udcXX`` escapes first.
    """
    if any("\ud800" <= c <= "\udfff" for c in text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    marker = f"… [truncated: {len(text)} characters; sha256:{digest} of the full text]"
    return text[:limit - len(marker)] + marker


def entry_hash(entry: dict[str, Any]) -> str:
    """The hash an entry carries: sha256 of the canonical JSON of everything but ``hash``."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical.encode(body)).hexdigest()


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def check_entry_shape(entry: Any, where: str) -> dict[str, Any]:
    """Refuse anything that is not an entry as :func:`make_entry` writes one (FormatError)."""
    if not isinstance(entry, dict):
        raise FormatError(f"{where} is not a JSON object")
    if set(entry) != set(ENTRY_FIELDS):
        extra = sorted(set(entry) ^ set(ENTRY_FIELDS))
        raise FormatError(f"{where} has wrong fields ({', '.join(extra)})")
    seq = entry["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise FormatError(f"{where}: seq must be a whole number")
    for key in ("time", "decision", "reason", "prev", "hash"):
        if not isinstance(entry[key], str):
            raise FormatError(f"{where}: {key} must be a string")
    if entry["decision"] not in DECISIONS:
        raise FormatError(f"{where}: unknown decision {entry['decision'][:40]!r}")
    try:
        parse_time(entry["time"])
    except ValueError:
        raise FormatError(f"{where}: time is not a UTC time like 2026-01-31T12:00:00Z") from None
    signers = entry["signers"]
    if not isinstance(signers, list) or not all(isinstance(s, str) for s in signers):
        raise FormatError(f"{where}: signers must be a list of key ids")
    for key in ("bundle", "artifact"):
        if entry[key] is not None and not isinstance(entry[key], dict):
            raise FormatError(f"{where}: {key} must be an object or null")
    for key in ("manifestDigest", "versionBefore", "versionAfter", "note"):
        if entry[key] is not None and not isinstance(entry[key], str):
            raise FormatError(f"{where}: {key} must be a string or null")
    return entry


def make_entry(seq: int, prev: str, time: str, decision: str, reason: str, *,
               bundle: dict | None, manifest_digest: str | None, signers: list[str],
               artifact: dict | None, version_before: str | None, version_after: str | None,
               note: str | None) -> dict[str, Any]:
    """A complete, hashed entry. Pure: the trail's I/O is kept apart in :class:`AuditTrail`."""
    if decision not in DECISIONS:
        raise UsageError(f"audit: unknown decision {decision!r} (one of {', '.join(DECISIONS)})")
    if not isinstance(reason, str):
        raise UsageError("audit: reason must be a string")
    reason = fit_text(reason)  # a refusal is recorded however long its message: never fail on bookkeeping
    note = None if note is None else fit_text(note)
    entry: dict[str, Any] = {
        "seq": seq, "time": time, "decision": decision, "reason": reason,
        "bundle": dict(bundle) if bundle is not None else None,
        "manifestDigest": manifest_digest, "signers": sorted(signers),
        "artifact": dict(artifact) if artifact is not None else None,
        "versionBefore": version_before, "versionAfter": version_after, "note": note,
        "prev": prev,
    }
    entry["hash"] = entry_hash(entry)  # also checks the values encode (no floats, ...)
    return entry


# --------------------------------------------------------------------------- checking a chain


@dataclass(frozen=True)
class Head:
    """The chain head kept apart from the trail: the last committed entry's seq and hash.

    A new trail starts with the head ``seq = -1, hash = GENESIS`` written *before* the first
    entry, so that a missing head is always an error, never a first append cut short.
    """

    seq: int
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"format": HEAD_FORMAT, "seq": self.seq, "hash": self.hash}

    @classmethod
    def from_dict(cls, value: Any, where: str = "audit head") -> Head:
        if (not isinstance(value, dict) or value.get("format") != HEAD_FORMAT
                or not isinstance(value.get("seq"), int) or isinstance(value.get("seq"), bool)
                or value["seq"] < -1 or not isinstance(value.get("hash"), str)):
            raise FormatError(f"{where} is not a ferry audit head ({{format, seq, hash}})")
        return cls(seq=value["seq"], hash=value["hash"])


@dataclass(frozen=True)
class AuditCheck:
    """Outcome of checking a trail.

    ``ok`` when the chain is whole; otherwise ``reason`` (one of :data:`REASONS`) and
    ``first_bad_seq`` name the first entry found edited, removed, reordered or truncated, and
    ``detail`` says it in a sentence. ``pending`` describes an interrupted append that the next
    append completes (the chain is still whole).
    """

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None
    detail: str = ""
    head: Head | None = None
    pending: str | None = None

    @property
    def summary(self) -> str:
        if self.ok:
            text = f"audit trail whole: {self.entries} entr{'y' if self.entries == 1 else 'ies'}"
            return text + (f" ({self.pending})" if self.pending else "")
        return f"audit trail {self.reason}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "firstBadSeq": self.first_bad_seq,
                "reason": self.reason, "detail": self.detail, "pending": self.pending,
                "head": None if self.head is None else {"seq": self.head.seq, "hash": self.head.hash}}


@dataclass(frozen=True)
class _Line:
    seq: int | None  # None: not a valid entry
    hash: str | None
    prev: str | None
    self_ok: bool
    error: str


def _scan(line: bytes, index: int) -> _Line:
    try:
        entry = check_entry_shape(canonical.decode(line, what=f"entry {index}"), f"entry {index}")
    except FormatError as exc:
        return _Line(None, None, None, False, str(exc))
    ok = entry_hash(entry) == entry["hash"]
    return _Line(entry["seq"], entry["hash"], entry["prev"], ok,
                 "" if ok else f"entry {entry['seq']} does not match its hash")


def iter_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Lines of ``stream`` with their newline (the last may lack one: a torn tail), each read
    with a bounded buffer: a line over ``limit`` is drained and yielded as an invalid line."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:
                more = stream.readline(limit)
                if not more or more.endswith(b"\n"):
                    break
            yield b"(line over the size limit)\n"
            continue
        yield line


def check_chain(lines: Iterable[bytes], head: Head | None) -> AuditCheck:
    """Check a trail against itself and its head. Pure and streaming: ``lines`` are raw lines
    *with* their newline, as :func:`iter_lines` yields them; a last line without one is a torn
    tail. Memory stays constant however long the trail: one pass, stopping at the first fault
    (then only counting, and looking for the missing entry to tell removal from reordering)."""
    it = iter(lines)
    n = 0
    prev_hash = GENESIS
    head_hash = GENESIS if head is not None and head.seq < 0 else None
    torn = False

    def bad(reason: str, seq: int | None, detail: str, rest: int = 0) -> AuditCheck:
        return AuditCheck(False, n + rest, seq, reason, detail, head)

    for line in it:
        if not line.endswith(b"\n"):
            torn = True  # only the last line can lack its newline
            break
        i = n
        s = _scan(line[:-1], i)
        fault = None
        if s.seq is None:
            fault = ("edited", i, f"entry {i} is not a valid audit entry ({s.error})")
        elif s.seq != i:
            found_later = s.seq < i
            rest = 0
            for other in it:  # is entry i further on? (reordered) or gone? (removed)
                rest += 1
                if not found_later and other.endswith(b"\n") and _scan(other[:-1], 0).seq == i:
                    found_later = True
            n += 1
            if found_later:
                return bad("reordered", i, f"entry {s.seq} is at position {i}: entries were reordered", rest)
            missing = f"{i}" if s.seq == i + 1 else f"{i} to {s.seq - 1}"
            return bad("removed", i, f"entry {missing} {'is' if s.seq == i + 1 else 'are'} missing", rest)
        elif not s.self_ok:
            fault = ("edited", i, f"entry {i} was edited: its content does not match its hash")
        elif s.prev != prev_hash:
            what = "does not start from the genesis" if i == 0 else f"does not link to entry {i - 1}"
            fault = ("edited", max(i - 1, 0), f"entry {i} {what}: entry {max(i - 1, 0)} or its link was rewritten")
        if fault is not None:
            n += 1
            return bad(*fault, rest=sum(1 for _ in it))
        prev_hash = s.hash or ""
        if head is not None and i == head.seq:
            head_hash = s.hash
        n += 1

    if head is None:
        if n == 0 and not torn:
            return AuditCheck(True, 0, head=None)
        return bad("head", None, "the chain head (audit/head.json) is missing; removal of the "
                                 "last entries cannot be ruled out")
    if head.seq >= n:
        if torn:
            return bad("truncated", n, f"the trail ends inside entry {n} (the head names entry {head.seq})")
        missing = f"entry {n}" if head.seq == n else f"entries {n} to {head.seq}"
        return bad("removed", n, f"{missing} {'is' if head.seq == n else 'are'} missing from the end "
                                 f"(the head names entry {head.seq})")
    if head.hash != head_hash:
        return bad("edited", head.seq, f"entry {head.seq} differs from the one the head recorded: "
                                       "the chain was rewritten")
    pending = None
    if head.seq == n - 2:
        pending = "the last append was interrupted before the head moved; the next append completes it"
    elif head.seq < n - 2:
        return bad("head", head.seq + 1, f"the head names entry {head.seq} but the trail has {n} "
                                         "entries: entries were added outside ferry or the head was replaced")
    if torn:
        pending = "the trail ends in a partial line from an interrupted append; the next append removes it"
    return AuditCheck(True, n, head=head, pending=pending)


def _parse_head(data: bytes) -> Head:
    return Head.from_dict(canonical.decode(data, what="audit head"))


# --------------------------------------------------------------------------- the trail on disk


class AuditTrail:
    """The audit trail of one edge state folder.

    Files are opened below the state folder without following links (importer.state's
    helpers), like everything else the edge writes.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / AUDIT_DIR
        self.trail_path = self.dir / TRAIL_NAME
        self.head_path = self.dir / HEAD_NAME

    # ---- reading

    @contextmanager
    def _open_dir(self, *, create: bool = False) -> Iterator[int | None]:
        """A descriptor of the audit folder (None when there is none and ``create`` is False)."""
        from importer.state import open_dir

        try:
            root = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                raise PlaceError("state", str(self.state_dir), f"state folder {self.state_dir} does not exist") from None
            yield None
            return
        try:
            try:
                fd: int | None = open_dir(root, AUDIT_DIR, create=create)
            except FileNotFoundError:
                fd = None
            try:
                yield fd
            finally:
                if fd is not None:
                    os.close(fd)
        finally:
            os.close(root)

    @staticmethod
    def _read_head(dir_fd: int | None) -> tuple[Head | None, str | None]:
        """The head, and a problem reading it (if any)."""
        if dir_fd is None:
            return None, None
        try:
            fd = os.open(HEAD_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"{HEAD_NAME}: {exc.strerror or exc}"
        try:
            return _parse_head(os.read(fd, 4096)), None
        except FormatError as exc:
            return None, str(exc)
        finally:
            os.close(fd)

    @staticmethod
    @contextmanager
    def _trail(dir_fd: int | None) -> Iterator[BinaryIO | None]:
        if dir_fd is None:
            yield None
            return
        try:
            fd = os.open(TRAIL_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:
            raise PlaceError("state", TRAIL_NAME, f"cannot read the audit trail: {exc.strerror or exc}") from None
        with os.fdopen(fd, "rb") as f:
            yield f

    def verify(self) -> AuditCheck:
        """Check the whole chain against the head (see :data:`REASONS` and the module docstring)."""
        with self._open_dir() as d:
            head, problem = self._read_head(d)
            with self._trail(d) as f:
                if problem is not None:
                    count = sum(1 for _ in iter_lines(f)) if f is not None else 0
                    return AuditCheck(False, count, None, "head", f"the chain head is unreadable: {problem}")
                check = check_chain(iter_lines(f) if f is not None else [], head)
        if check.ok and check.entries == 0:
            return self._none_left(check)
        return check

    def _none_left(self, check: AuditCheck) -> AuditCheck:
        """An empty (or missing) trail is whole only where the ledger records no import: every
        imported bundle was audited before the ledger called it imported (importer.run), so
        ledger rows without a single entry mean the trail and its head were removed together."""
        from .state import EdgeState

        try:
            state = EdgeState.open_readonly(self.state_dir)
        except FerryError:
            return check
        if state is None:
            return check
        try:
            imported = sum(1 for b in state.bundles() if b["status"] in ("imported", "settled"))
        except sqlite3.Error:
            return check
        finally:
            state.close()
        if not imported:
            return check
        return AuditCheck(False, 0, 0, "removed", f"the trail is empty or missing, but the ledger records {imported} "
                                                  "bundle(s) imported: its entries were removed")

    def entries(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Entries in order (those at or after ``since`` when given), streamed. Does not verify
        the chain: call :meth:`verify` for that. An unreadable line raises FormatError; a torn
        last line (an interrupted append) is not an entry and is skipped."""
        with self._open_dir() as d, self._trail(d) as f:
            if f is None:
                return
            for i, line in enumerate(iter_lines(f)):
                if not line.endswith(b"\n"):
                    return
                entry = check_entry_shape(canonical.decode(line[:-1], what=f"audit entry {i}"), f"audit entry {i}")
                if since is None or parse_time(entry["time"]) >= since:
                    yield entry

    def head(self) -> Head | None:
        with self._open_dir() as d:
            return self._read_head(d)[0]

    # ---- appending

    def _tail(self, f: BinaryIO | None) -> tuple[bytes | None, int]:
        """The last complete line (None for an empty trail) and the length of a torn tail after it.
        Reads only the end of the file, so an append costs the same however long the trail."""
        if f is None:
            return None, 0
        size = os.fstat(f.fileno()).st_size
        window = min(size, 2 * MAX_LINE_BYTES + 2)
        f.seek(size - window)
        data = f.read(window)
        body, sep, torn = data.rpartition(b"\n")
        if not sep:
            if window < size:
                raise PlaceError("state", str(self.state_dir), "audit trail: its last line is over the size limit; not appending to it")
            return None, len(torn)
        last = body.rpartition(b"\n")[2]
        if len(body) == len(last) and window < size:
            raise PlaceError("state", str(self.state_dir), "audit trail: its last line is over the size limit; not appending to it")
        return last, len(torn)

    def append(self, decision: str, reason: str, *, bundle: dict | None, manifest_digest: str | None,
               signers: list[str], artifact: dict | None, version_before: str | None,
               version_after: str | None, note: str | None = None) -> dict[str, Any]:
        """Append one decision, fsync it, then move the head. Returns the entry written.

        Checks the end of the chain first — the head, and the last entry against its own hash
        and the head — and refuses (PlaceError) to extend a trail whose end is broken, so that
        tampering is never papered over by new entries. (The whole chain is ``verify``'s job;
        reading only the end keeps an append's cost independent of the trail's length.)
        An interrupted earlier append is completed first.
        """
        from manifests.durable import write_atomic_at

        refuse = (f"Audit trail {self.dir}: run `ferry audit verify --state {self.state_dir}` "
                  "and keep the evidence; not appending to it")
        with self._open_dir(create=True) as d:
            assert d is not None
            lock = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=d)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)  # two appends never interleave
                head, problem = self._read_head(d)
                if problem is not None:
                    raise PlaceError("state", str(self.state_dir), f"the chain head is unreadable ({problem}). {refuse}")
                with self._trail(d) as f:
                    last_line, torn = self._tail(f)
                if last_line is None:
                    n, prev = 0, GENESIS
                    if head is not None and (head.seq, head.hash) != (-1, GENESIS):
                        raise PlaceError("state", str(self.state_dir), f"the trail is empty but its head names entry {head.seq}. {refuse}")
                    gone = self._none_left(AuditCheck(True, 0))
                    if not gone.ok:  # a new first entry would make a removed trail look whole
                        raise PlaceError("state", str(self.state_dir), f"{gone.detail}. {refuse}")
                else:
                    s = _scan(last_line, -1)
                    if s.seq is None or not s.self_ok:
                        raise PlaceError("state", str(self.state_dir), f"its last entry is not intact ({s.error}). {refuse}")
                    n, prev = s.seq + 1, s.hash or ""
                    whole = head is not None and (
                        (head.seq == s.seq and head.hash == s.hash)
                        or (head.seq == s.seq - 1 and head.hash == s.prev and not torn))
                    if not whole:
                        raise PlaceError("state", str(self.state_dir), f"its head does not match its last entry. {refuse}")
                if torn:  # a partial line from an interrupted append: never committed, cut it off
                    fd = os.open(TRAIL_NAME, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
                    try:
                        os.ftruncate(fd, os.fstat(fd).st_size - torn)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                if head is None or head.seq != n - 1:  # a new trail, or an append whose head never moved
                    write_atomic_at(d, HEAD_NAME, canonical.encode(Head(n - 1, prev).to_dict()))
                entry = make_entry(n, prev, utc_now(), decision, reason, bundle=bundle,
                                   manifest_digest=manifest_digest, signers=list(signers), artifact=artifact,
                                   version_before=version_before, version_after=version_after, note=note)
                fd = os.open(TRAIL_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644, dir_fd=d)
                try:
                    data = memoryview(canonical.encode(entry) + b"\n")
                    while data:
                        data = data[os.write(fd, data):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.fsync(d)  # the trail's name, when it was just created
                write_atomic_at(d, HEAD_NAME, canonical.encode(Head(n, entry["hash"]).to_dict()))
                return entry
            finally:
                os.close(lock)


# --------------------------------------------------------------------------- signed export

EXPORT_FORMAT = "ferry-audit-export"
EXPORT_VERSION = "1.0"
#: Largest export accepted by :func:`parse_export` (checked on the size before reading).
MAX_EXPORT_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class AuditExport:
    """The trail with its chain head, as carried out to the auditors (canonical JSON)::

        {"format": "ferry-audit-export", "formatVersion": "1.0", "exported": "<UTC time>",
         "head": {"format": "ferry-audit-head", "seq": N, "hash": "..."} | null,
         "entries": [<entry>, ...]}

    Signed detached in ``FILE.sig`` with payload type ``application/vnd.ferry.audit.v1+json``.
    """

    exported: str
    head: Head | None
    entries: tuple[dict[str, Any], ...]

    def to_bytes(self) -> bytes:
        return canonical.encode({
            "format": EXPORT_FORMAT, "formatVersion": EXPORT_VERSION, "exported": self.exported,
            "head": None if self.head is None else self.head.to_dict(),
            "entries": list(self.entries),
        })

    def check(self) -> AuditCheck:
        """The same chain check as on the edge, over the exported entries and head."""
        return check_chain((canonical.encode(e) + b"\n" for e in self.entries), self.head)


def parse_export(data: bytes) -> AuditExport:
    """Parse an export strictly; any malformed input raises FormatError (never anything else)."""
    from manifests.model import check_format

    if len(data) > MAX_EXPORT_BYTES:
        raise FormatError(f"audit export is {len(data)} bytes, over the limit of {MAX_EXPORT_BYTES}")
    doc = canonical.decode(data, what="audit export")
    if not isinstance(doc, dict):
        raise FormatError("audit export must be a JSON object")
    check_format(doc.get("format"), doc.get("formatVersion"), EXPORT_FORMAT, "audit export")
    exported = doc.get("exported")
    if not isinstance(exported, str):
        raise FormatError("audit export: exported must be a UTC time")
    try:
        parse_time(exported)
    except ValueError:
        raise FormatError("audit export: exported must be a UTC time like 2026-01-31T12:00:00Z") from None
    head = None if doc.get("head") is None else Head.from_dict(doc["head"], "audit export head")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise FormatError("audit export: entries must be a list")
    for i, entry in enumerate(entries):
        check_entry_shape(entry, f"audit export entry {i}")
    return AuditExport(exported=exported, head=head, entries=tuple(entries))


def build_export(trail: AuditTrail) -> AuditExport:
    """Everything committed in ``trail`` (not a torn last line) with its head, as found:
    a broken chain is exported as it is, so that auditors see the evidence."""
    try:
        entries = tuple(trail.entries())
    except FormatError as exc:
        raise PlaceError("state", str(trail.trail_path), f"audit trail {trail.trail_path}: {exc}; it cannot be exported as entries "
                         "(copy the file itself as evidence)") from None
    return AuditExport(exported=utc_now(), head=trail.head(), entries=entries)
