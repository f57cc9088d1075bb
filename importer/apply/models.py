"""Models -> the edge's model store: ``EDGE/models/<name>/<version>/<exact files>``.

Inference pods mount ``EDGE/models/<name>/current``, a symbolic link switched atomically
(new link under a temp name, then rename over ``current``) once a version is complete.

Writing happens in two steps so that a kill -9 at any moment loses at most the file being
written and never shows a half-written version:

1. :func:`stage_model` writes each file under ``models/<name>/.partial-<hash>/`` (:func:`partial_name`)
   (a temporary name, fsync, rename, fsync the folder) and records it in the ledger with its
   chunk locations; a rerun skips the files already recorded, and the chunk store can already
   serve their chunks.
2. :func:`publish_model` (idempotent, journaled by the caller) renames the staging folder to
   ``<version>`` and switches ``current``; :func:`commit_model` records it in the ledger.

Nothing here follows a symbolic link: every folder is opened with ``O_NOFOLLOW`` through
directory descriptors (:func:`importer.state.open_dir`).
"""

from __future__ import annotations

import errno
import json
import functools
import os
import shutil
import sqlite3
import stat
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from manifests.digest import blake3_hex
from manifests.errors import FerryError, VerificationError
from manifests.model import Artifact, Entry, Manifest
from manifests.paths import safe_join
from manifests.version import parse_version

from ..state import MODELS_DIR, EdgeState, create_file, open_dir, set_installed
from ..store import ChunkStore
from . import Applied, Context, Job, ReadEntry

if TYPE_CHECKING:
    from .modelpack import StagedDigests, StagingHasher

CURRENT = "current"


class NoSpace(FerryError):
    """The disk under EDGE filled up while writing: the whole import stops (nothing else fits)."""


PARTIAL_PREFIX = ".partial-"
TRASH_PREFIX = ".trash-"



def model_dir(name: str) -> str:
    return f"{MODELS_DIR}/{name}"


def version_dir(name: str, version: str) -> str:
    return f"{MODELS_DIR}/{name}/{version}"


def partial_name(version: str) -> str:
    """The staging folder's name for ``version``: fixed length (a hash), so that a version of
    the 255 characters the format allows still gives a name within NAME_MAX (255 bytes)."""
    return f"{PARTIAL_PREFIX}{blake3_hex(version.encode('utf-8'))[:32]}"


def trash_name(version: str) -> str:
    """A name for a version folder on its way out, within NAME_MAX however long the version."""
    return f"{TRASH_PREFIX}{blake3_hex(version.encode('utf-8'))[:32]}-{os.getpid()}"


def staging_dir(name: str, version: str) -> str:
    return f"{MODELS_DIR}/{name}/{partial_name(version)}"


def files_to_write(state: EdgeState, artifact: Artifact) -> list[Entry]:
    """The files not yet staged by an earlier, interrupted run."""
    sdir = staging_dir(artifact.name, artifact.version)
    return [e for e in artifact.entries
            if not (state.is_staged(sdir, e.path or "", e.blake3) and _size_at(state, f"{sdir}/{e.path}") == e.size)]


def on_disk(state: EdgeState, artifact: Artifact, content: str) -> bool:
    """Whether this exact version is already present (kept after an upgrade): nothing to write."""
    return state.kept_versions("model", artifact.name).get(artifact.version) == content


#: A file being written is made durable and recorded this often, so that an interrupted run
#: resumes inside a large file instead of at its start.
CHECKPOINT_BYTES = 64 * 1024 * 1024


def stage_model(state: EdgeState, store: ChunkStore, artifact: Artifact, manifest: Manifest,
                read_entry: ReadEntry, advance: Callable[[int], None] = lambda n: None,
                digests: StagedDigests | None = None) -> int:
    """Write every file not yet staged; return the bytes written. A file becomes visible in
    the staging folder (and recorded) only after its bytes verified end to end.

    With ``digests`` given, each file's sha256 and the modelcar layer's are computed from the
    bytes written, on two worker threads (:class:`importer.apply.modelpack.StagingHasher`), and
    recorded there for publishing (files staged by an earlier run are not: publishing reads them)."""
    sdir = staging_dir(artifact.name, artifact.version)
    written = 0
    hasher = None
    if digests is not None:
        from .modelpack import StagingHasher

        hasher = StagingHasher([(e.path or "", e.size) for e in artifact.entries])
    sfd = open_dir(state.root_fd, sdir, create=True)
    try:
        for entry in files_to_write(state, artifact):
            written += _stage_file(state, store, sfd, sdir, entry, manifest, read_entry, advance, hasher)
    finally:
        os.close(sfd)
        if hasher is not None and digests is not None:
            got = hasher.close()
            digests.files, digests.layer, digests.layer_files = got.files, got.layer, got.layer_files
    return written


@functools.lru_cache(maxsize=64)
def zero_chunk_id(size: int) -> str:
    """The chunk id (BLAKE3) of ``size`` zero bytes: such a chunk is written as a hole."""
    return blake3_hex(bytes(size))


def _is_zero_chunk(data: bytes | memoryview, cid: str) -> bool:
    """Whether a verified chunk is all zeros (its id says so; the end bytes rule out almost
    every other chunk without hashing)."""
    view = memoryview(data)
    return len(view) > 0 and view[0] == 0 and view[-1] == 0 and cid == zero_chunk_id(len(view))


def _stage_file(state: EdgeState, store: ChunkStore, sfd: int, sdir: str, entry: Entry, manifest: Manifest,
                read_entry: ReadEntry, advance: Callable[[int], None], hasher: StagingHasher | None = None) -> int:
    """Write one file under a temporary name, then rename it into the staging folder.

    Every CHECKPOINT_BYTES the part file is fsynced and the chunks it holds so far are
    recorded as locations: a rerun reads those chunks back from the part file (checked
    against their ids by the store) instead of from the medium, and rewrites them in place."""
    path = entry.path or ""
    safe_join("/staging", path)  # refuses anything that would leave the folder
    parent, _, base = path.rpartition("/")
    # Never a bundle path (paths may not hold a backslash), so it cannot collide with a file of
    # the model such as ".a.bin.part", and of fixed length, so a 255-byte name still fits.
    tmp = f".part\\{blake3_hex(path.encode('utf-8'))[:32]}"
    tmp_rel = f"{parent}/{tmp}" if parent else tmp
    written = 0
    pfd = open_dir(sfd, parent, create=True) if parent else os.dup(sfd)
    try:
        resumed = state.db.execute("SELECT 1 FROM locations WHERE dir=? AND file=? LIMIT 1",
                                   (sdir, tmp_rel)).fetchone() is not None
        fd = None
        if resumed:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            except FileNotFoundError:
                fd = None
        if fd is None:
            with state.transaction() as db:
                db.execute("DELETE FROM locations WHERE dir=? AND file=?", (sdir, tmp_rel))
            fd = create_file(pfd, tmp)
        offset = since = durable = 0
        try:
            pending: list[tuple[str, int, int]] = []
            chunk_ids = iter(entry.chunks)
            if hasher is not None:
                hasher.start(path)
            for data in read_entry(entry):
                cid = next(chunk_ids)
                if hasher is not None:
                    hasher.update(data)
                if _is_zero_chunk(data, cid):
                    # A hole where the file system allows (sparse files stay sparse); reads as zeros.
                    os.lseek(fd, len(data), os.SEEK_CUR)
                else:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                pending.append((cid, offset, len(data)))
                offset += len(data)
                since += len(data)
                written += len(data)
                advance(len(data))
                if since >= CHECKPOINT_BYTES:
                    os.fsync(fd)
                    with state.transaction() as db:
                        store.index_chunks(db, sdir, tmp_rel, pending)
                    pending, since, durable = [], 0, offset
            os.ftruncate(fd, offset)  # the length, when the file ends in a hole
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            os.ftruncate(fd, durable)  # give back what is not recorded; the rest resumes later
            raise NoSpace(f"no space left under {state.root} while writing {path} of model "
                          f"{sdir.split('/')[1]!r} ({offset} of {entry.size} bytes); free some space and "
                          "run the import again: it continues where it stopped") from None
        finally:
            os.close(fd)
        store.forget_fds()
        os.rename(tmp, base, src_dir_fd=pfd, dst_dir_fd=pfd)
        os.fsync(pfd)
    finally:
        os.close(pfd)
    with state.transaction() as db:
        db.execute("DELETE FROM locations WHERE dir=? AND file=?", (sdir, tmp_rel))
        store.index_file(sdir, path, entry, manifest, db=db)
        db.execute("INSERT OR REPLACE INTO staged VALUES (?,?,?)", (sdir, path, entry.blake3))
    if hasher is not None:
        hasher.end(path, offset)  # its bytes verified (read_entry ended without error) and are durable
    return written


def discard_staging(state: EdgeState, store: ChunkStore, name: str, version: str) -> None:
    """Forget and remove what a failed (not interrupted) write staged: a version that did not
    verify leaves nothing behind, not even the folders made for it."""
    sdir = staging_dir(name, version)
    with state.transaction() as db:
        db.execute("DELETE FROM staged WHERE dir=?", (sdir,))
        db.execute("DELETE FROM locations WHERE dir=?", (sdir,))
    store.forget_fds()
    try:
        mfd = open_dir(state.root_fd, model_dir(name))
    except FileNotFoundError:
        return
    try:
        if _is_dir(mfd, partial_name(version)):
            _rmtree_at(mfd, partial_name(version))
        empty = not os.listdir(mfd)
        os.fsync(mfd)
    finally:
        os.close(mfd)
    if empty:
        for rel in (model_dir(name), MODELS_DIR):
            try:
                os.rmdir(rel, dir_fd=state.root_fd)
            except OSError:
                break


def publish_model(state: EdgeState, name: str, version: str, *, staged: bool) -> None:
    """Move a ``staged`` version into place and point ``current`` at it (``staged`` False: the
    version is already on disk, only ``current`` moves). Idempotent: safe to repeat after a
    crash at any point."""
    mfd = open_dir(state.root_fd, model_dir(name), create=True)
    try:
        partial = partial_name(version)
        if staged and _exists(mfd, partial):
            if _exists(mfd, version):  # an old copy of this version (replaced by a forced downgrade)
                os.rename(version, trash_name(version), src_dir_fd=mfd, dst_dir_fd=mfd)
            os.rename(partial, version, src_dir_fd=mfd, dst_dir_fd=mfd)
            os.fsync(mfd)
        elif not _is_dir(mfd, version):
            raise FerryError(f"model {name!r} {version}: neither staged nor on disk under {model_dir(name)}")
        tmp = f".{CURRENT}.tmp"
        _unlink(mfd, tmp)
        os.symlink(version, tmp, dir_fd=mfd)
        try:
            st = os.stat(CURRENT, dir_fd=mfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise FerryError(f"{model_dir(name)}/{CURRENT} is a folder, not ferry's link; move it away")
        except FileNotFoundError:
            pass
        os.rename(tmp, CURRENT, src_dir_fd=mfd, dst_dir_fd=mfd)
        os.fsync(mfd)
        _remove_trash(mfd)
    finally:
        os.close(mfd)


def commit_model(db: sqlite3.Connection, *, name: str, version: str, content: str, bundle_id: str,
                 manifest: str, staged: bool, variant: str | None = None) -> None:
    """Inside a transaction, after :func:`publish_model`: the ledger follows the files
    (``variant``: the name of the variant now installed, None for a model without variants)."""
    sdir, vdir = staging_dir(name, version), version_dir(name, version)
    if staged:  # the folder was (re)placed: old locations under its name no longer hold
        db.execute("DELETE FROM locations WHERE dir=?", (vdir,))
        db.execute("UPDATE locations SET dir=? WHERE dir=?", (vdir, sdir))
        db.execute("DELETE FROM staged WHERE dir=?", (sdir,))
    db.execute("INSERT OR REPLACE INTO versions VALUES ('model', ?, ?, ?, datetime('now'))", (name, version, content))
    set_installed(db, kind="model", name=name, version=version, content=content, bundle_id=bundle_id,
                  manifest=manifest, variant=variant)


def prune_models(state: EdgeState, store: ChunkStore, name: str, keep: int) -> list[str]:
    """Remove all but the ``keep`` highest versions of a model, never the current one."""
    current = state.installed().get(("model", name))
    versions = sorted(state.kept_versions("model", name), key=parse_version, reverse=True)
    keep_set = {current.version} if current is not None else set()
    others = [v for v in versions if v not in keep_set]
    keep_set.update(others[:max(keep - len(keep_set), 0)])
    doomed = [v for v in versions if v not in keep_set]
    if not doomed:
        return []
    with state.transaction() as db:
        for v in doomed:
            db.execute("DELETE FROM versions WHERE kind='model' AND name=? AND version=?", (name, v))
            db.execute("DELETE FROM locations WHERE dir=?", (version_dir(name, v),))
    store.forget_fds()
    mfd = open_dir(state.root_fd, model_dir(name))
    try:
        for v in doomed:
            if _exists(mfd, v):
                os.rename(v, trash_name(v), src_dir_fd=mfd, dst_dir_fd=mfd)
        os.fsync(mfd)
        _remove_trash(mfd)
    finally:
        os.close(mfd)
    return doomed


# --------------------------------------------------------------------------- helpers


def _size_at(state: EdgeState, rel: str) -> int | None:
    try:
        st = os.stat(rel, dir_fd=state.root_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _is_dir(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _remove_trash(mfd: int) -> None:
    """Delete folders set aside by a replace or prune (also those a crash left behind)."""
    for entry in os.listdir(mfd):
        if entry.startswith(TRASH_PREFIX) and _is_dir(mfd, entry):
            _rmtree_at(mfd, entry)


def _rmtree_at(dir_fd: int, name: str) -> None:
    # shutil.rmtree with dir_fd never follows links (it uses the fd-based implementation)
    shutil.rmtree(name, dir_fd=dir_fd)


# --------------------------------------------------------------------------- the apply target


def finish_model(state: EdgeState, store: ChunkStore, audit: Any, jid: int, payload: dict[str, Any]) -> None:
    """Publish a staged model, record it, audit it, then drop the journal entry ``jid``.

    ``payload`` is the journal entry :meth:`ModelTarget.apply` wrote (name, version, content,
    staged, bundleId, manifest, audit: the entry for ``audit.append``). Each step is
    idempotent, so a crash anywhere here is finished by :func:`importer.run.recover`."""
    if not payload.get("committed"):
        store.forget_fds()
        publish_model(state, payload["name"], payload["version"], staged=payload["staged"])
        payload = {**payload, "committed": True}
        with state.transaction() as db:
            commit_model(db, name=payload["name"], version=payload["version"], content=payload["content"],
                         bundle_id=payload["bundleId"], manifest=payload["manifest"], staged=payload["staged"],
                         variant=payload.get("variant"))
            db.execute("UPDATE journal SET payload=? WHERE id=?", (json.dumps(payload, sort_keys=True), jid))
    if audit is not None and payload.get("audit"):
        a = payload["audit"]
        audit.append(a["decision"], a["reason"], bundle=a["bundle"], manifest_digest=a["manifestDigest"],
                     signers=a["signers"], artifact=a["artifact"], version_before=a["versionBefore"],
                     version_after=a["versionAfter"], note=a.get("note"))
    with state.transaction() as db:
        db.execute("DELETE FROM journal WHERE id=?", (jid,))


class ModelTarget:
    """Models into ``EDGE/models`` (:class:`importer.apply.ApplyTarget`): staged file by file,
    published with a journal entry so a crash is rolled forward, recorded and audited here."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def needs(self, artifact: Artifact) -> list[Entry]:
        if on_disk(self.ctx.state, artifact, artifact.content_digest):
            return []
        return files_to_write(self.ctx.state, artifact)

    def bytes_to_write(self, artifact: Artifact, entries: list[Entry]) -> int:
        """The files to write, plus what publishing into ``EDGE/oci`` adds when a new version
        is written (no ``--registry``; :func:`importer.apply.modelpack.layout_bytes`)."""
        written = sum(e.size for e in entries)
        if not entries or self.ctx.registry:
            return written
        from .modelpack import layout_bytes

        return written + layout_bytes(self.ctx.state.root, artifact)

    def apply(self, artifact: Artifact, read_entry: ReadEntry, job: Job) -> Applied:
        state, store = self.ctx.state, self.ctx.store
        staged = not on_disk(state, artifact, job.content)
        from .modelpack import StagedDigests, signed_digests

        # The hub's signed sha256 values when the manifest carries them (format 1.3): nothing
        # to hash; else staging hashes the bytes it writes (StagingHasher).
        digests = signed_digests(artifact) or StagedDigests()
        if staged:
            try:
                stage_model(state, store, artifact, job.manifest, read_entry,
                            digests=None if artifact.publish_digests else digests)
            except VerificationError:  # a version that did not verify leaves nothing behind
                discard_staging(state, store, artifact.name, artifact.version)
                raise
        payload = {"op": "model", "name": artifact.name, "version": artifact.version, "content": job.content,
                   "staged": staged, "bundleId": job.bundle_id, "manifest": job.manifest_digest, "audit": job.audit,
                   "variant": artifact.variant.name if artifact.variant else None}
        jid = state.add_journal(payload)
        finish_model(state, store, self.ctx.audit, jid, payload)
        ref, note = self.publish(artifact, job, digests)
        return Applied(ref=ref, note=note, recorded=True)

    def publish(self, artifact: Artifact, job: Job, digests: StagedDigests | None = None) -> tuple[str | None, str]:
        """Publish the installed version where images go (``--registry``, else ``EDGE/oci``) as
        a ModelPack artifact and a modelcar image (:mod:`importer.apply.modelpack`, issue #14),
        and record the reference workloads are pinned to (the modelcar,
        :func:`importer.apply.modelpack.pinned_model_ref`) as the model's ``ref``. A failure is a note: the model
        itself is installed and its folder serves as before. The ledger's ``published`` table and
        a ``published`` audit entry say where (repository, tags, digests). ``digests``: the
        sha256s staging computed (:func:`stage_model`), so that the files are not read again."""
        from ..state import record_published
        from .modelpack import pinned_model_ref, publish_installed, published_row, where_published

        try:
            published, _ = publish_installed(self.ctx.state.root, artifact.name, artifact.version,
                                               registry=self.ctx.registry,
                                               insecure_registries=self.ctx.insecure_registries,
                                               variant=artifact.variant, digests=digests)
        except (FerryError, OSError) as exc:
            return None, f"; installed, but not published as an OCI artifact: {exc}"
        row = published_row(published, artifact.name, artifact.version, self.ctx.registry or "")
        ref = pinned_model_ref(row)  # what workloads are pinned to: the modelcar (importer.apply.kube.prepare)
        with self.ctx.state.transaction() as db:
            db.execute("UPDATE installed SET ref=? WHERE kind='model' AND name=?", (ref, artifact.name))
            record_published(db, row)
        a = job.audit
        if self.ctx.audit is not None and a:
            self.ctx.audit.append("published", f"published {where_published(row)}", bundle=a["bundle"],
                                  manifest_digest=a["manifestDigest"], signers=a["signers"], artifact=a["artifact"],
                                  version_before=None, version_after=artifact.version)
        return ref, ""  # the ref (shown as "-> ref" and in status) says where it was published

