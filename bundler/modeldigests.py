"""The publishing digests of a model version, computed at export from the bytes the cutter reads.

Format 1.3 (docs/bundle-format.md 3.2.3) lets the hub sign, for each model file, its
``sha256`` (the digest of its raw ModelPack layer) and, for the model, the ``modelcar``
layer's sha256 (the tar layer :func:`manifests.modelpack.modelcar_plan` lays out), so that the
edge publishes without hashing (issue #14).

Where the hashing runs: on one thread of its own (:class:`ModelDigests`), fed the same window
views the cutting thread hands to BLAKE3 (hashlib releases the GIL on large buffers), so the
cutting thread only queues them; before the cutter writes a window again the exporter waits
for this thread (:meth:`ModelDigests.settle`, called from ``bundler.export._Run.reuse``), so no
copy is made. The two sha256 passes (file and layer) take turns on that thread.

Files the hub does not cut (a chunk-cache hit) take their sha256 from the hub state's
content-addressed cache (BLAKE3 -> sha256, :meth:`bundler.hubstate.HubState.known_digest`), and
the modelcar digest from the same cache keyed by the artifact's content digest. When a model
is not wholly in those caches (a new version beside unchanged files, a resumed export), the
cached files are read, not cut, for the layer's hash (:meth:`ModelDigests.read_file`); a
file whose sha256 is in no cache is cut afresh.
"""

from __future__ import annotations

import hashlib
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from manifests.errors import FerryError, PlaceError
from manifests.modelpack import ModelcarHasher

_READ = 1 << 20


class ModelDigests:
    """Each file's sha256 and the modelcar layer's for one model artifact, hashed on a thread
    of its own in the order the bytes are given.

    Use per file: :meth:`start`, :meth:`update` with its bytes (views that stay valid until
    :meth:`settle` returns), :meth:`end`; or :meth:`known` for a file not read. Then
    :meth:`close`.

    Args:
        files: (path inside the model, size in bytes) of every file of the model version.
    """

    def __init__(self, files: list[tuple[str, int]]) -> None:
        self._layer: ModelcarHasher | None
        try:
            self._layer = ModelcarHasher(files)
        except FerryError:
            self._layer = None  # paths no modelcar can hold: no modelcar digest
        self.files: dict[str, str] = {}
        self._finished: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._file: hashlib._Hash | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-sha256")
        self._last: Future[None] | None = None

    def _put(self, step: Callable[..., None], *args: object) -> None:
        self._last = self._thread.submit(step, *args)

    # ---- the cutting thread

    def start(self, path: str) -> None:
        self._put(self._start, path)

    def update(self, data: bytes | memoryview) -> None:
        self._put(self._update, data)

    def end(self, path: str, size: int) -> None:
        self._put(self._end, path, size)

    def known(self, path: str, sha256: str | None) -> None:
        """A file not read (its chunks were cached): its sha256 from the digest cache, or None;
        the layer can then not be hashed in this pass."""
        self._put(self._known, path, sha256)

    def read_file(self, path: str, size: int, opener: Callable[[], BinaryIO], sha256: str | None = None) -> None:
        """Hash a file the export does not cut (its chunks were cached) by reading it, on the
        calling thread once the hashing thread is idle, so that the modelcar layer's hash
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
        if sha256 is not None:
            self._file = None
        got = 0
        try:
            with opener() as f:
                while data := f.read(_READ):
                    if self._file is not None:
                        self._file.update(data)
                    if self._layer is not None:
                        self._layer.update(data)
                    got += len(data)
        except OSError as exc:
            raise PlaceError("source", path, f"cannot read {path}: {exc.strerror or exc}") from None
        if got != size:
            raise PlaceError("source", path, f"{path}: read {got} bytes, expected {size} (changed while exporting?)")
        self._end(path, size, sha256)

    def finished(self) -> list[tuple[str, str]]:
        """(path, ``sha256:<hex>``) of the files hashed since the last call, without waiting:
        the exporter remembers them at once, so that a killed export resumes without reading
        those files again."""
        out = []
        while True:
            try:
                out.append(self._finished.get_nowait())
            except queue.Empty:
                return out

    def settle(self) -> None:
        """Wait until every byte given so far is hashed (before its window is written again)."""
        if self._last is not None:
            self._last.result()

    def close(self) -> tuple[dict[str, str], str | None]:
        """(path -> ``sha256:<hex>`` of each file hashed or known, the modelcar layer's
        ``sha256:<hex>`` or None when a file was not read or was given out of layer order)."""
        try:
            self.settle()
            layer = None
            if self._layer is not None:
                self._thread.submit(self._digest).result()
                layer = self._layer_digest
            return self.files, layer
        finally:
            self._thread.shutdown(wait=True)

    def abort(self) -> None:
        """Stop the thread without a result (the export failed)."""
        self._thread.shutdown(wait=True, cancel_futures=True)

    # ---- on the hashing thread

    def _start(self, path: str) -> None:
        self._file = hashlib.sha256()
        if self._layer is not None:
            try:
                self._layer.start(path)
            except FerryError:
                self._layer = None

    def _update(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        self._file.update(data)
        if self._layer is not None:
            self._layer.update(data)

    def _end(self, path: str, size: int, known: str | None = None) -> None:
        if known is None:
            assert self._file is not None
            known = "sha256:" + self._file.hexdigest()
        self.files[path] = known
        self._finished.put((path, known))
        self._file = None
        if self._layer is not None:
            try:
                self._layer.end(size)
            except FerryError:
                self._layer = None

    def _known(self, path: str, sha256: str | None) -> None:
        if sha256 is not None:
            self.files[path] = sha256
        self._layer = None

    _layer_digest: str | None = None

    def _digest(self) -> None:
        try:
            self._layer_digest = self._layer.digest() if self._layer is not None else None
        except FerryError:
            self._layer_digest = None


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
        got = 0
        try:
            with opener() as f:
                while data := f.read(_READ):
                    layer.update(data)
                    got += len(data)
        except OSError as exc:
            raise PlaceError("source", path, f"cannot read {path}: {exc.strerror or exc}") from None
        if got != size:
            raise PlaceError("source", path, f"{path}: read {got} bytes, expected {size} (changed while exporting?)")
        layer.end(size)
    return layer.digest()
