"""The edge state (``--state EDGE``): the site's memory, kept crash-safe.

Layout::

    EDGE/state.db           sqlite3 ledger + chunk index (rollback journal, synchronous=FULL)
    EDGE/lock               fcntl.flock'd by the one import allowed at a time (manifests.locking: pid, host, command, since)
    EDGE/models/<name>/...  installed model versions (importer.apply.models)
    EDGE/oci/               OCI image layout when no --registry is given
    EDGE/manifests/<set>/   manifest sets for a GitOps agent when no --kubeconfig is given
    EDGE/store/spill/<id>   chunks that arrived before their artifact was complete

Why sqlite3: the ledger (installed versions, channel sequences, imported manifests) and the
chunk index must change together with the files they describe, and survive kill -9 or power
loss at any instant. sqlite gives atomic multi-row transactions, a rollback journal fsynced on
commit (``synchronous=FULL``), and crash recovery for free, from the standard library; a
hand-rolled JSON journal would re-implement all of that. (Not WAL mode: a read-only reader,
``ferry status`` or a dry run, would leave ``-wal``/``-shm`` files behind.) File system steps that cannot sit
inside a transaction (renaming a version into place, switching ``current``) are described in
the ``journal`` table first and rolled forward by :func:`importer.run.recover` after a crash.

Everything written below EDGE goes through :func:`open_dir` / :func:`create_file`, which never
follow a symbolic link (``O_NOFOLLOW`` on every component, via directory file descriptors).
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.policy import Installed
from manifests.errors import FerryError, PlaceError
from manifests.locking import FolderLock, acquire
from manifests.model import utc_now

DB_NAME = "state.db"
LOCK_NAME = "lock"
MODELS_DIR = "models"
OCI_DIR = "oci"
MANIFESTS_DIR = "manifests"
SPILL_DIR = "store/spill"
#: 1: image rows keyed by repository; 2: by ``repository:tag`` (importer.policy.unit);
#: 3: ``installed.variant``, the model variant installed (manifests.variants).
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- what is installed now, per artifact
CREATE TABLE IF NOT EXISTS installed (
    kind TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, content TEXT NOT NULL,
    bundle_id TEXT NOT NULL, manifest TEXT NOT NULL, at TEXT NOT NULL, ref TEXT, variant TEXT,
    PRIMARY KEY (kind, name));
-- model versions present on disk (current and kept ones)
CREATE TABLE IF NOT EXISTS versions (
    kind TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, content TEXT NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (kind, name, version));
CREATE TABLE IF NOT EXISTS channels (channel TEXT PRIMARY KEY, sequence INTEGER NOT NULL);
-- every manifest seen, status: imported (all applied or same), settled (some refused by
-- policy), partial (waiting for volumes, or an artifact failed verification)
CREATE TABLE IF NOT EXISTS bundles (
    digest TEXT PRIMARY KEY, id TEXT NOT NULL, name TEXT NOT NULL, channel TEXT NOT NULL,
    sequence INTEGER NOT NULL, status TEXT NOT NULL, at TEXT NOT NULL, created TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS bundles_id ON bundles (id);
-- chunk index: where the raw bytes of a chunk can be read (verified on read).
-- dir/file relative to EDGE; zstd=1 means the file is the stored frame (spill store)
CREATE TABLE IF NOT EXISTS locations (
    chunk TEXT NOT NULL, dir TEXT NOT NULL, file TEXT NOT NULL, offset INTEGER NOT NULL,
    size INTEGER NOT NULL, zstd INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (chunk, dir, file, offset));
CREATE INDEX IF NOT EXISTS locations_dir ON locations (dir);
-- OCI blobs and image manifests the site holds, by digest, and where ('registry HOST' or
-- 'layout'): recorded when an image is applied, listed in receipts (delta exports leave them out)
CREATE TABLE IF NOT EXISTS oci_blobs (
    digest TEXT NOT NULL, place TEXT NOT NULL, PRIMARY KEY (digest, place));
-- files completely written (fsynced) into a model's staging folder: skipped on resume
CREATE TABLE IF NOT EXISTS staged (
    dir TEXT NOT NULL, file TEXT NOT NULL, blake3 TEXT NOT NULL, PRIMARY KEY (dir, file));
-- file system steps decided but maybe not done yet (rolled forward by recover)
CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
-- objects of a manifest set that ferry applied to the WEC, in apply order (importer.wec:
-- what pruning may delete later); the site identity is in meta (importer.site)
CREATE TABLE IF NOT EXISTS kube_applied (
    set_name TEXT NOT NULL, position INTEGER NOT NULL, api_version TEXT NOT NULL, kind TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, create_only INTEGER NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (set_name, api_version, kind, namespace, name));
-- the .status of applied objects as the WEC reported it after apply (for the return path)
CREATE TABLE IF NOT EXISTS kube_status (
    set_name TEXT NOT NULL, api_version TEXT NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, status TEXT NOT NULL, collectors TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (set_name, api_version, kind, namespace, name));
-- per applied object and StatusCollector, its result over this WEC's row (importer.wec,
-- manifests.statuscollect: KubeStellar's NamedStatusCombination, JSON)
CREATE TABLE IF NOT EXISTS kube_collected (
    set_name TEXT NOT NULL, api_version TEXT NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, collector TEXT NOT NULL, result TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (set_name, api_version, kind, namespace, name, collector));
-- model versions published as OCI artifacts (issue #14): place is the registry HOST[:PORT],
-- or "" for the embedded layout EDGE/oci; the ModelPack manifest and the modelcar image
CREATE TABLE IF NOT EXISTS published (
    name TEXT NOT NULL, version TEXT NOT NULL, place TEXT NOT NULL, repository TEXT NOT NULL,
    tag TEXT NOT NULL, digest TEXT NOT NULL, modelcar_tag TEXT, modelcar_digest TEXT, at TEXT NOT NULL,
    PRIMARY KEY (name, version, place));
"""


def _schema_statements() -> list[str]:
    text = "\n".join(line for line in _SCHEMA.splitlines() if not line.lstrip().startswith("--"))
    return [s for s in text.split(";") if s.strip()]


def _default_site() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64].strip("-._")
    return name or "edge"


# --------------------------------------------------------------------------- safe file system


def open_dir(root_fd: int, rel: str, *, create: bool = False) -> int:
    """Open folder ``rel`` (``/``-separated, relative) below ``root_fd`` without following any
    link; with ``create`` make missing components (fsyncing each parent). Caller closes."""
    fd = os.dup(root_fd)
    try:
        for part in [p for p in rel.split("/") if p]:
            if part in (".", ".."):
                raise PlaceError("state", str(rel), f"refusing path component {part!r} in {rel!r}")
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.fsync(fd)
                except FileExistsError:
                    pass
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PlaceError("state", str(rel), f"refusing to write through {rel!r}: {part!r} is a link or not a folder") from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def create_file(dir_fd: int, name: str, mode: int = 0o644) -> int:
    """Create ``name`` fresh (replacing a stale regular file, never following a link)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            raise PlaceError("state", str(name), f"cannot write {name!r}: a folder is in the way")
        os.unlink(name, dir_fd=dir_fd)
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)


# --------------------------------------------------------------------------- the state


@dataclass(frozen=True)
class InstalledRow:
    kind: str
    name: str
    version: str
    content: str
    bundle_id: str
    manifest: str
    at: str
    ref: str | None  # pinned image reference, when known
    variant: str | None = None  # the model variant installed (schema 3)


_ROW_FIELDS = frozenset(InstalledRow.__dataclass_fields__)


@dataclass(frozen=True)
class PublishedRow:
    """A model version published as OCI artifacts (:mod:`importer.apply.modelpack`): ``place``
    is the registry ``HOST[:PORT]``, or "" for the embedded layout ``EDGE/oci``; ``repository``
    ``models/<name>``; the ModelPack manifest's ``tag`` and ``digest``; the modelcar image's
    ``modelcar_tag`` and ``modelcar_digest`` (None when it was not published)."""

    name: str
    version: str
    place: str
    repository: str
    tag: str
    digest: str
    modelcar_tag: str | None
    modelcar_digest: str | None
    at: str


class EdgeState:
    """An open edge state: the ledger and chunk index (sqlite) and, when locked, the right to
    change anything under EDGE. Use :meth:`open` (read-write, locked) or :meth:`open_readonly`."""

    def __init__(self, root: Path, db: sqlite3.Connection, root_fd: int, lock: FolderLock | None) -> None:
        self.root = root
        self.db = db
        self.root_fd = root_fd
        self._lock = lock

    # ---- opening

    @classmethod
    def open(cls, root: Path) -> EdgeState:
        """Create EDGE if needed, take the lock (refusing clearly if another import holds it),
        open the ledger read-write."""
        root = Path(os.path.abspath(root))
        try:
            root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise PlaceError("state", str(root), f"--state {root}: exists and is not a folder") from None
        except OSError as exc:
            raise PlaceError("state", str(root), f"--state {root}: cannot create ({exc.strerror or exc})") from None
        if not root.is_dir():
            raise PlaceError("state", str(root), f"--state {root}: not a folder")
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        lock: FolderLock | None = None
        try:
            lock = acquire(root, LOCK_NAME, place="state", label=f"--state {root}", what="import", dir_fd=root_fd)
            db = _connect(root / DB_NAME, readonly=False)
            state = cls(root, db, root_fd, lock)
            state._init_schema()
            return state
        except BaseException:
            if lock is not None:
                lock.release()
            os.close(root_fd)
            raise

    @classmethod
    def open_readonly(cls, root: Path) -> EdgeState | None:
        """The ledger for reading, without the lock (None when there is no state yet, including a
        ledger file whose creation was interrupted before its schema was committed: the schema is
        made in one transaction, so without its ``meta`` table nothing was ever recorded)."""
        root = Path(os.path.abspath(root))
        if not (root / DB_NAME).is_file():
            if root.exists() and not root.is_dir():
                raise PlaceError("state", str(root), f"--state {root}: not a folder")
            return None
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            db = _connect(root / DB_NAME, readonly=True)
            if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
                db.close()
                os.close(root_fd)
                return None
        except BaseException:
            os.close(root_fd)
            raise
        try:
            made = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is not None
        except sqlite3.DatabaseError:
            made = True  # a damaged ledger: let the query that needs it say so
        if not made:  # a first import killed between creating the file and its schema: no state yet
            db.close()
            os.close(root_fd)
            return None
        return cls(root, db, root_fd, None)

    @classmethod
    def open_for_plan(cls, root: Path) -> EdgeState:
        """For a dry run: the ledger read-only, or an empty one in memory (nothing is created)."""
        state = cls.open_readonly(root)
        if state is not None:
            return state
        db = sqlite3.connect(":memory:", isolation_level=None)
        for statement in _schema_statements():
            db.execute(statement)
        return cls(Path(os.path.abspath(root)), db, os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), None)

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        os.close(self.root_fd)

    def __enter__(self) -> EdgeState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        return self._lock is not None

    def _init_schema(self) -> None:
        with self.transaction():
            for statement in _schema_statements():
                self.db.execute(statement)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                self.db.execute("INSERT INTO meta VALUES ('site', ?)", (_default_site(),))
                self.db.execute("INSERT INTO meta VALUES ('created', ?)", (utc_now(),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise PlaceError("state", str(self.root), f"--state {self.root} was written by a newer ferry (schema {row[0]}); upgrade ferry")
            elif int(row[0]) < SCHEMA_VERSION:
                if int(row[0]) < 2:
                    migrate_image_rows_to_tags(self.db, self.root / OCI_DIR / "index.json")
                columns = [r[1] for r in self.db.execute("PRAGMA table_info(installed)")]
                if "variant" not in columns:  # schema 2 -> 3
                    self.db.execute("ALTER TABLE installed ADD COLUMN variant TEXT")
                self.db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
        os.fsync(self.root_fd)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable change to the ledger (BEGIN IMMEDIATE ... COMMIT)."""
        if not self.writable:
            raise FerryError("internal: the edge state is open read-only")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise PlaceError("state", str(self.root / DB_NAME), f"edge state {self.root / DB_NAME}: {exc} (nothing of this step was recorded; "
                             "free some space if the disk is full, then run again)") from None

    # ---- reads

    @property
    def site(self) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key='site'").fetchone()
        return row[0] if row else "edge"

    def installed_rows(self) -> list[InstalledRow]:
        rows = self.db.execute(
            "SELECT * FROM installed ORDER BY kind, name")
        cols = [d[0] for d in rows.description]
        return [InstalledRow(**{k: v for k, v in zip(cols, r) if k in _ROW_FIELDS}) for r in rows]

    def installed(self) -> dict[tuple[str, str], Installed]:
        return {(r.kind, r.name): Installed(version=r.version, content=r.content, variant=r.variant)
                for r in self.installed_rows()}

    def published(self, place: str | None = None) -> list[PublishedRow]:
        """Model versions published as OCI artifacts, by name and version; only those at
        ``place`` (a registry host, "" for ``EDGE/oci``) when given. A state written before
        the table existed, opened read-only, has none."""
        sql = ("SELECT name, version, place, repository, tag, digest, modelcar_tag, modelcar_digest, at "
               "FROM published")
        args: tuple[str, ...] = ()
        if place is not None:
            sql, args = sql + " WHERE place=?", (place,)
        try:
            rows = self.db.execute(sql + " ORDER BY name, version, place", args).fetchall()
        except sqlite3.OperationalError:
            return []
        return [PublishedRow(*r) for r in rows]

    def kept_versions(self, kind: str, name: str) -> dict[str, str]:
        """version -> content digest of every version present on disk."""
        return dict(self.db.execute("SELECT version, content FROM versions WHERE kind=? AND name=?", (kind, name)))

    def held_blobs(self) -> list[str]:
        """Digests (``sha256:<hex>``) of the OCI blobs and manifests the site's registry or
        layout holds, sorted, unique (none for a state that predates the record, or that a
        read-only open finds without the table)."""
        try:
            rows = self.db.execute("SELECT DISTINCT digest FROM oci_blobs ORDER BY digest")
        except sqlite3.OperationalError:
            return []
        return [r[0] for r in rows]

    def channels(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT channel, sequence FROM channels ORDER BY channel"))

    def newest_created(self) -> dict[str, str]:
        """Per channel, the signed creation time of the newest bundle imported: how long a site
        has gone without updates (a courier withholding them shows up here)."""
        return dict(self.db.execute("SELECT channel, max(created) FROM bundles WHERE status != 'partial' "
                                    "GROUP BY channel ORDER BY channel"))

    def last_sequence(self, channel: str) -> int | None:
        row = self.db.execute("SELECT sequence FROM channels WHERE channel=?", (channel,)).fetchone()
        return row[0] if row else None

    def bundle_status(self, digest: str) -> str | None:
        row = self.db.execute("SELECT status FROM bundles WHERE digest=?", (digest,)).fetchone()
        return row[0] if row else None

    def digests_for_bundle_id(self, bundle_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT digest FROM bundles WHERE id=?", (bundle_id,))]

    def bundles(self) -> list[dict[str, Any]]:
        cols = ("digest", "id", "name", "channel", "sequence", "status", "at", "created")
        return [dict(zip(cols, r)) for r in self.db.execute(
            f"SELECT {', '.join(cols)} FROM bundles ORDER BY channel, sequence, at")]

    def is_staged(self, dir_: str, file: str, blake3: str) -> bool:
        row = self.db.execute("SELECT blake3 FROM staged WHERE dir=? AND file=?", (dir_, file)).fetchone()
        return row is not None and row[0] == blake3

    def journal(self) -> list[tuple[int, dict[str, Any]]]:
        return [(i, json.loads(p)) for i, p in self.db.execute("SELECT id, payload FROM journal ORDER BY id")]

    # ---- writes (each one transaction)

    def record_bundle(self, *, digest: str, bundle_id: str, name: str, channel: str, sequence: int,
                      status: str, created: str, advance: bool = True) -> None:
        """Remember a manifest (with its signed creation time, for freeze monitoring) and, once
        settled, advance its channel's sequence; ``advance=False`` leaves the channel as it was
        (a refusal the same bundle may pass on a rerun, importer.plan.LIFTABLE)."""
        with self.transaction() as db:
            db.execute("INSERT INTO bundles VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(digest) DO UPDATE SET "
                       "status=excluded.status, at=excluded.at",
                       (digest, bundle_id, name, channel, sequence, status, utc_now(), created))
            if status != "partial" and advance:
                db.execute("INSERT INTO channels VALUES (?, ?) ON CONFLICT(channel) DO UPDATE SET "
                           "sequence=max(sequence, excluded.sequence)", (channel, sequence))

    def add_journal(self, payload: dict[str, Any]) -> int:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO journal (payload) VALUES (?)", (json.dumps(payload, sort_keys=True),))
            return int(cur.lastrowid or 0)


def migrate_image_rows_to_tags(db: sqlite3.Connection, layout_index: Path) -> None:
    """Schema 1 -> 2, inside a transaction: re-key each ``installed`` image row from its
    repository to ``repository:tag``, the unit the version rule now protects
    (importer.policy.unit; docs/edge-state.md "Schema versions").

    Schema 1 did not store the tag. It is found, in order: in the edge's OCI layout
    (``layout_index``, an ``org.opencontainers.image.ref.name`` of ``repository:tag`` naming the
    row's pinned manifest digest); else the row's version, which schema-1 exports took from the
    tag whenever the tag was a semantic version.

    Args:
        db: the ledger, in a write transaction.
        layout_index: ``EDGE/oci/index.json`` (may be absent).
    """
    names: dict[str, list[str]] = {}
    try:
        index = json.loads(layout_index.read_bytes()) if layout_index.is_file() else {}
    except (OSError, ValueError):
        index = {}
    for d in (index.get("manifests") or []) if isinstance(index, dict) else []:
        ref_name = (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") if isinstance(d, dict) else None
        if isinstance(ref_name, str) and isinstance(d.get("digest"), str):
            names.setdefault(d["digest"], []).append(ref_name)
    rows = db.execute("SELECT name, version, ref FROM installed WHERE kind='image'").fetchall()
    for name, version, ref in rows:
        if ":" in name.rsplit("/", 1)[-1]:
            continue  # already a tag (a half-finished earlier migration cannot happen, but be idempotent)
        digest = ref.rpartition("@")[2] if isinstance(ref, str) and "@" in ref else None
        tags = sorted(n[len(name) + 1:] for n in names.get(digest or "", []) if n.startswith(name + ":"))
        tag = version if version in tags or not tags else tags[0]
        db.execute("UPDATE installed SET name=? WHERE kind='image' AND name=?", (f"{name}:{tag}", name))


def record_blobs(db: sqlite3.Connection, digests: list[str], place: str) -> None:
    """Record that ``place`` (``registry HOST[:PORT]`` or ``layout``) now holds ``digests``
    (OCI blobs and manifests, ``sha256:<hex>``), inside the caller's transaction."""
    db.executemany("INSERT OR IGNORE INTO oci_blobs VALUES (?, ?)", [(d, place) for d in digests])


def set_installed(db: sqlite3.Connection, *, kind: str, name: str, version: str, content: str,
                  bundle_id: str, manifest: str, ref: str | None = None, variant: str | None = None) -> None:
    """Inside a transaction: ``version`` (of model ``variant``) is now what the site runs for (kind, name)."""
    db.execute("INSERT OR REPLACE INTO installed (kind, name, version, content, bundle_id, manifest, at, ref, variant) "
               "VALUES (?,?,?,?,?,?,?,?,?)", (kind, name, version, content, bundle_id, manifest, utc_now(), ref, variant))


def record_published(db: sqlite3.Connection, row: PublishedRow) -> None:
    """Inside a transaction: ``row`` says where a model version is now published (replacing
    what an earlier publish of the same version at the same place recorded)."""
    db.execute("INSERT OR REPLACE INTO published VALUES (?,?,?,?,?,?,?,?,?)",
               (row.name, row.version, row.place, row.repository, row.tag, row.digest, row.modelcar_tag,
                row.modelcar_digest, row.at))


def forget_published(db: sqlite3.Connection, row: PublishedRow) -> None:
    """Inside a transaction: ``row``'s artifacts are gone (pruned)."""
    db.execute("DELETE FROM published WHERE name=? AND version=? AND place=?", (row.name, row.version, row.place))


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    for p in (path, path.with_name(path.name + "-journal")):
        if p.is_symlink():  # sqlite would follow it
            raise PlaceError("state", str(p), f"edge state {p} is a symbolic link; refusing to use it")
    try:
        if readonly:
            journal = path.with_name(path.name + "-journal")
            if journal.is_file() and journal.stat().st_size > 0:
                # A writer was killed mid-transaction (a hot journal): a read-only connection may
                # not roll it back and fails. sqlite's own recovery to the last commit needs a
                # read-write open; it does nothing while a live import holds the journal.
                rw = sqlite3.connect(path, isolation_level=None, timeout=30)
                try:
                    rw.execute("SELECT count(*) FROM sqlite_master").fetchone()
                finally:
                    rw.close()
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
        else:
            db = sqlite3.connect(path, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise PlaceError("state", str(path), f"edge state {path} cannot be read ({exc}); it is not a ferry state database") from None
    return db


def read_installed(state_dir: Path) -> dict[tuple[str, str], Installed]:
    """What the edge has installed, read-only and without the lock ({} for no state)."""
    state = EdgeState.open_readonly(Path(state_dir))
    if state is None:
        return {}
    try:
        return state.installed()
    except sqlite3.OperationalError:
        return {}  # an empty database (created but never initialised)
    finally:
        state.close()
