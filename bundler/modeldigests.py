"""The publishing digests of a model version, computed at export from the bytes the cutter reads.

Format 1.3 (docs/bundle-format.md 3.2.3) lets the hub sign, for each model file, its
``sha256`` (the digest of its raw ModelPack layer) and, for the model, the ``modelcar``
layer's sha256 (the tar layer :func:`manifests.modelpack.modelcar_plan` lays out), so that the
edge publishes without hashing (issue #14).

Each is computed once per file version (:class:`ModelDigests`):

* Where: two SHA-256 passes over the same bytes (the file's and the layer's; the layer's
  chaining value differs from the file's, so one cannot serve both), each on a thread of its
  own where cores allow (:func:`sha_threads`), else both on one; fed the same window views
  the cutting thread hands to BLAKE3 (hashlib and OpenSSL release the GIL on large
  buffers): the cutting thread only queues them, the file is read once, and before the
  cutter writes a window again the exporter waits for these threads
  (:meth:`ModelDigests.settle`, from ``bundler.export._Run.reuse``), so no copy is made.
* Once: a file the hub does not cut (a chunk-cache hit: an unchanged file version,
  :class:`bundler.hubstate.FileKey`) takes its sha256 from the hub state's content-addressed
  cache (BLAKE3 -> sha256, :meth:`bundler.hubstate.HubState.known_digest`), and the modelcar
  digest from the same cache keyed by the artifact's content digest.
* Resume: the layer's hash runs through every file in layer order, so a model not wholly in
  those caches (a killed export, a new version beside unchanged files) would read its cached
  files again for it. Instead the layer hash's running state is saved in the hub state after
  a file (at least every :data:`SAVE_EVERY` bytes, :mod:`bundler.sha256state`), keyed by the
  layer plan and the BLAKE3 of every file up to it (:func:`state_key`); the next export goes
  on from the last state whose files are unchanged (:func:`resume_point`) and reads only the
  cached files after it (:meth:`ModelDigests.read_file`). A file whose sha256 is in no cache
  is cut afresh.
"""

from __future__ import annotations

import hashlib
import json
import queue
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from manifests.errors import FerryError, PlaceError
from manifests.modelpack import ModelcarHasher

from . import sha256state

_READ = 1 << 20
#: Bytes of the modelcar layer hashed between two saved states of its hash (at a file's end):
#: a rerun reads again at most this much plus one file for it; one hub-state row per step.
SAVE_EVERY = 16 << 20
#: Hub state key prefixes (HubState.known_digest): a saved layer state, by :func:`state_key`.
STATE_PREFIX = "modelcar-state:"


def sha_threads(usable_cpus: int, workers: int) -> int:
    """Threads for the two SHA-256 passes: two where a core is left for each beside the
    pool's ``workers``, the cutting thread and the whole-file BLAKE3's thread (so 16 cores at
    the default budget's 4 workers), else one (on 2 cores both take turns on one thread,
    measured: a hand-off per window costs a turn on a busy core)."""
    return 2 if usable_cpus >= workers + 4 else 1


def state_root(files: Iterable[tuple[str, int]]) -> str:
    """The first link of :func:`state_key`'s chain: the layer plan's input (every file's path
    and size, which fix every header and offset), as hex."""
    return hashlib.sha256(json.dumps(sorted(files), separators=(",", ":")).encode()).hexdigest()


def state_key(previous: str, path: str, blake3: str) -> str:
    """The key of the layer hash's state after file ``path`` (layer order): the chain of
    :func:`state_root` and each file's path and BLAKE3 up to it, as hex; the same key means
    the same bytes hashed."""
    return hashlib.sha256(f"{previous}\n{path}\n{blake3}".encode()).hexdigest()


def resume_point(files: list[tuple[str, int]], known: Callable[[str], tuple[str, str] | None],
                 saved: Callable[[str], str | None]) -> tuple[str, str, list[str]] | None:
    """Where the layer's hash of a model can go on from a saved state.

    Args:
        files: (path, size) of every file of the model version.
        known: path -> (BLAKE3, sha256) of the file when both are cached (its version
            unchanged), else None.
        saved: a state key (:func:`state_key`) -> the saved state, or None.
    Returns:
        (path of the last file the state covers, the state, the paths it covers in layer
        order), the furthest such point among the files known from the first on; None.
    """
    link, covered, best = state_root(files), [], None
    for path, _ in sorted(files):
        got = known(path)
        if got is None:
            break
        link = state_key(link, path, got[0])
        covered.append(path)
        state = saved(STATE_PREFIX + link)
        if state is not None:
            best = (path, state, list(covered))
    return best


class ModelDigests:
    """Each file's sha256 and the modelcar layer's for one model artifact, hashed on threads
    of their own in the order the bytes are given.

    Use per file: :meth:`start`, :meth:`update` with its bytes (views that stay valid until
    :meth:`settle` returns), :meth:`end`; or :meth:`read_file` for a file not cut; or
    :meth:`known` for a file not read. Then :meth:`close`.

    Args:
        files: (path inside the model, size in bytes) of every file of the model version.
        threads: 1 or 2 (:func:`sha_threads`): the layer's hash on a thread of its own.
        resume: (path, saved state) from :func:`resume_point`: the layer's hash goes on after
            that file (its files and those before are given with ``known(..., in_layer=True)``);
            ignored (hashed from the start) when the state does not fit.
    """

    def __init__(self, files: list[tuple[str, int]], threads: int = 1,
                 resume: tuple[str, str] | None = None) -> None:
        self._files = files
        self._layer = self._new_layer()
        self.resumed: str | None = None  # the file the layer's hash went on after
        if resume is not None and self._layer is not None and isinstance(self._layer.sha, sha256state.Sha256):
            try:
                at = self._layer.resume_after(resume[0])
                if self._layer.sha.restore(resume[1], at):
                    self.resumed = resume[0]
            except FerryError:
                pass
            if self.resumed is None:
                self._layer = self._new_layer()
        self._unsaved = 0  # layer bytes hashed since the last saved state
        self.files: dict[str, str] = {}
        self._finished: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._states: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._file: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-sha256")
        self._layer_thread = (self._thread if threads < 2 else
                              ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-sha256-layer"))
        self._last: Future[None] | None = None
        self._last_layer: Future[None] | None = None

    def _new_layer(self) -> ModelcarHasher | None:
        try:
            return ModelcarHasher(self._files, sha256state.resumable())
        except FerryError:
            return None  # paths no modelcar can hold: no modelcar digest

    # ---- the cutting thread

    def start(self, path: str) -> None:
        self._last = self._thread.submit(self._start, path)
        self._last_layer = self._layer_thread.submit(self._layer_start, path)

    def update(self, data: bytes | memoryview) -> None:
        self._last = self._thread.submit(self._update, data)
        self._last_layer = self._layer_thread.submit(self._layer_update, data)

    def end(self, path: str, size: int) -> None:
        self._last = self._thread.submit(self._end, path, size)
        self._last_layer = self._layer_thread.submit(self._layer_end, path, size)

    def known(self, path: str, sha256: str | None, in_layer: bool = False) -> None:
        """A file not read (its chunks were cached): its sha256 from the digest cache, or None.
        With ``in_layer`` the layer's hash was resumed after it (or after a later file), else
        the layer can then not be hashed in this pass."""
        self.settle()
        if sha256 is not None:
            self.files[path] = sha256
        if not in_layer:
            self._layer = None

    def read_file(self, path: str, size: int, opener: Callable[[], BinaryIO], sha256: str | None = None) -> None:
        """Hash a file the export does not cut (its chunks were cached) by reading it, on the
        calling thread once the hashing threads are idle, so that the modelcar layer's hash
        goes on in layer order (cheaper than reading every file again afterwards).

        Args:
            path: the file's path inside the model; size: its size in bytes;
            opener: opens its bytes; sha256: its ``sha256:<hex>`` when the digest cache knows
                it (then only the layer is hashed: one pass, not two).
        Raises:
            PlaceError: the file cannot be read or changed size (place ``source``).
        """
        self.settle()
        self._start(path)
        self._layer_start(path)
        if sha256 is not None:
            self._file = None
        file, layer = self._file, self._layer

        def update(data: bytes) -> None:
            if file is not None:
                file.update(data)
            if layer is not None:
                layer.update(data)

        _read_whole(path, size, opener, update)
        self._end(path, size, sha256)
        self._layer_end(path, size)

    def finished(self) -> list[tuple[str, str]]:
        """(path, ``sha256:<hex>``) of the files hashed since the last call, without waiting:
        the exporter remembers them at once, so that a killed export resumes without reading
        those files again."""
        return _drain(self._finished)

    def saved_states(self) -> list[tuple[str, str]]:
        """(path, saved state) of the layer's hash after each file where one was saved since
        the last call (:data:`SAVE_EVERY`), without waiting: the exporter stores them under
        :func:`state_key`."""
        return _drain(self._states)

    def settle(self) -> None:
        """Wait until every byte given so far is hashed (before its window is written again)."""
        for last in (self._last, self._last_layer):
            if last is not None:
                last.result()

    def close(self) -> tuple[dict[str, str], str | None]:
        """(path -> ``sha256:<hex>`` of each file hashed or known, the modelcar layer's
        ``sha256:<hex>`` or None when a file was not read or was given out of layer order)."""
        try:
            self.settle()
            layer = None
            if self._layer is not None:
                try:
                    layer = self._layer.digest()
                except FerryError:
                    layer = None
            return self.files, layer
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the threads (the export failed, or :meth:`close`)."""
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._layer_thread.shutdown(wait=True, cancel_futures=True)

    # ---- on the file's hashing thread

    def _start(self, path: str) -> None:
        self._file = hashlib.sha256()

    def _update(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        self._file.update(data)

    def _end(self, path: str, size: int, known: str | None = None) -> None:
        if known is None:
            assert self._file is not None
            known = "sha256:" + self._file.hexdigest()
        self.files[path] = known
        self._finished.put((path, known))
        self._file = None

    # ---- on the layer's hashing thread (the same thread with one)

    def _layer_start(self, path: str) -> None:
        if self._layer is not None:
            try:
                self._layer.start(path)
            except FerryError:
                self._layer = None

    def _layer_update(self, data: bytes | memoryview) -> None:
        if self._layer is not None:
            self._layer.update(data)

    def _layer_end(self, path: str, size: int) -> None:
        layer = self._layer
        if layer is None:
            return
        try:
            layer.end(size)
        except FerryError:
            self._layer = None
            return
        self._unsaved += size
        if self._unsaved >= SAVE_EVERY and isinstance(layer.sha, sha256state.Sha256):
            self._states.put((path, layer.sha.save()))
            self._unsaved = 0


def _drain(q: queue.SimpleQueue[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def modelcar_by_reading(files: list[tuple[str, int, Callable[[], BinaryIO]]]) -> str:
    """The modelcar layer's sha256 by reading the files once more (files the export took
    from its chunk cache), in layer order.

    Args:
        files: (path inside the model, size in bytes, a function opening its bytes) per file.
    Returns:
        ``sha256:<hex>`` of the layer :func:`manifests.modelpack.modelcar_plan` lays out.
    Raises:
        PlaceError: a file cannot be read or changed size (place ``source``).
        FormatError: paths no modelcar can hold.
    """
    layer = ModelcarHasher([(p, n) for p, n, _ in files])
    for path, size, opener in sorted(files, key=lambda f: f[0]):
        layer.start(path)
        _read_whole(path, size, opener, layer.update)
        layer.end(size)
    return layer.digest()


def _read_whole(path: str, size: int, opener: Callable[[], BinaryIO], update: Callable[[bytes], None]) -> None:
    """Feed ``update`` the bytes of file ``path`` (``size`` bytes), read in 1 MiB blocks.

    Raises:
        PlaceError: the file cannot be read or is not ``size`` bytes long (place ``source``).
    """
    got = 0
    try:
        with opener() as f:
            while data := f.read(_READ):
                update(data)
                got += len(data)
    except OSError as exc:
        raise PlaceError("source", path, f"cannot read {path}: {exc.strerror or exc}") from None
    if got != size:
        raise PlaceError("source", path, f"{path}: read {got} bytes, expected {size} (changed while exporting?)")
