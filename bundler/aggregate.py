"""``ferry aggregate``: federated averaging of the model updates sites returned, streaming.

FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", algorithm 1): the new weights are the mean of the sites' weights, each
weighted by its number of training examples. Computed tensor by tensor over safetensors files
(format: https://huggingface.co/docs/safetensors, "Format"), so memory is bounded by the
largest tensor, never the model. Each tensor is cut into windows; a pool of threads, one per
core (numpy's ufuncs release the GIL), averages the windows, and the main thread writes their
results in order. A window is mapped read-only from every update (``mmap``: the page cache's
pages, no copy; unmapped when done, so resident file pages are bounded by :data:`MAP_BUDGET`,
not the model) and averaged :data:`BLOCK` elements at a time in reused per-thread buffers,
accumulated in float32 (float64 for F64 tensors) and written in the tensors' own dtype.

**What is correct, bit for bit** (the tests compute it independently with numpy): for each
element, ``acc = float32(x_0) * float32(w_0)``, then ``acc = acc + float32(x_i) * float32(w_i)``
for i = 1, 2, ... in the order the updates are given, every product and sum rounded to float32
(no fused multiply-add), then rounded once to the tensor's dtype (round to nearest even);
``w_i = n_i / sum(n)`` computed in float64. Blocks and threads only split the elements: each
element's sum has the same terms in the same order on any machine and any number of cores.

Why float32 is enough for F16 and F32 tensors: each term ``w_i * x_i`` is one float32 product
(an fp16 value is exact in float32: 11 significand bits of 24), and the sum of n terms with
weights summing to 1 carries a relative error of at most about ``n * 2**-24`` (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., section 4.2), far below fp16's
half-ulp of ``2**-11`` for any realistic number of sites; for F32 tensors it is the dtype's
own precision.

fp16 is widened and the float32 sum rounded back by onnxruntime's SIMD casts
(:mod:`bundler.halfcast`: F16C, 8-13 G elements/s per core against numpy's 0.7), exact and
checked against numpy before use; the weighing and adding stay numpy's float32 multiply and add
(no fused multiply-add). NaN and infinity survive those casts and reach the block's sum (weights
are positive), so the sum is checked once per block and the updates are searched for the culprit
only then, as for F32 and F64. Where onnxruntime is missing or inexact, fp16 is widened by moving
its bits (:func:`_widen`, 3.7 G/s per core) after a check for an all-ones exponent, and rounded
by numpy's cast.

Robust options: a coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed
Learning", section 3) drops the ``trim`` largest and smallest values of each coordinate before
an unweighted mean; it holds every site's copy of one block at once (memory: sites x block).
A norm screen (``max_norm_ratio``) refuses an update whose L2 norm (of update - base when the
base is known) is more than R times the median of the others' (:func:`update_norms`; one more
read of every update before the mean).

Everything is checked before a byte is written: every update's base, tensor names, shapes
and dtypes agree (and with the base model's when given); a NaN or infinity refuses the update
that holds it. The output is written to a temporary file and renamed only when whole.

The update files are the hub's own (``HUB/sites/<site>/<sequence>/updates``, written by
``ferry return import``) and must not be truncated while mapped: a mapped page past the end
of a file is a SIGBUS, not an error ferry can report.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import mmap
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from manifests.durable import WRITE_FLAGS, fsync_dir, make_dirs, write_atomic
from manifests.errors import FormatError, PlaceError, PolicyError, UsageError

from .halfcast import halfcast

#: safetensors dtypes ferry averages, and their numpy types (BF16 has no numpy type: refused).
DTYPES: dict[str, Any] = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
MAX_HEADER = 100 * 1024 * 1024
WEIGHTS_NAME = "model.safetensors"
#: Elements one pass (a cast, a multiply, an add) works on: 256 Ki elements is 1 MiB of float32
#: accumulator. Measured with onnxruntime's casts (8 updates of a 1 GiB fp16 model, one thread,
#: user CPU of the whole process): 64 Ki elements 1.98 s (the casts' and Python's cost per
#: call), 256 Ki 1.32 s, 1 Mi 1.18 s with four times the buffers.
BLOCK = 256 * 1024
#: Most blocks of one tensor a thread averages from one set of mappings (a task; :data:`MAP_BUDGET`
#: may allow fewer).
WINDOW_BLOCKS = 16
#: Bytes of update files mapped at once, all threads together (a mapped page the process has
#: touched counts in its RSS): windows shrink with more threads or updates to stay within it.
MAP_BUDGET = 64 * 1024 * 1024
PROVENANCE_NAME = "provenance.json"
#: Bytes of the mean staged before one direct write to its file (:class:`_Output`).
STAGE = 8 * 1024 * 1024


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offset of the data
    end: int


def read_header(path: Path) -> dict[str, Tensor]:
    """Tensors of a safetensors file by name (``__metadata__`` left out).

    Args:
        path: the file.
    Returns:
        name -> dtype, shape and absolute byte range.
    Raises:
        FormatError: not a safetensors file, or a tensor whose byte range does not match its
        dtype and shape. PlaceError: the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise FormatError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise FormatError(f"{path}: safetensors header length {n} is impossible")
            doc = json.loads(f.read(n))
    except OSError as exc:
        raise PlaceError("source", str(path), f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"{path}: safetensors header is not JSON") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: safetensors header is not an object")
    out: dict[str, Tensor] = {}
    for name, t in doc.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (b, e) = t["dtype"], tuple(int(d) for d in t["shape"]), t["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: tensor {name!r} lacks dtype, shape or data_offsets") from None
        if dtype not in DTYPES:
            raise FormatError(f"{path}: tensor {name!r} has dtype {dtype}; ferry aggregates F16, F32 and F64")
        if e - b != math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize or not 0 <= b <= e or 8 + n + e > size:
            raise FormatError(f"{path}: tensor {name!r}: its bytes do not match its dtype and shape")
        out[name] = Tensor(dtype, shape, 8 + n + b, 8 + n + e)
    return out


def check_alike(headers: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    """The common layout of several files, refusing any difference in names, shapes or dtypes.

    Args:
        headers: label (a site, or "base") -> its tensors.
    Returns:
        The first file's tensors.
    Raises:
        FormatError: naming the label and the first tensor that differs.
    """
    labels = list(headers)
    first = headers[labels[0]]
    for label in labels[1:]:
        other = headers[label]
        if set(other) != set(first):
            diff = sorted(set(other) ^ set(first))[0]
            raise FormatError(f"update of {label}: tensor {diff!r} is not in every update (tensor names differ)")
        for name, t in first.items():
            o = other[name]
            if o.shape != t.shape:
                raise FormatError(f"update of {label}: tensor {name!r} has shape {list(o.shape)}, not {list(t.shape)}")
            if o.dtype != t.dtype:
                raise FormatError(f"update of {label}: tensor {name!r} is {o.dtype}, not {t.dtype}")
    return first


def _read(f: IO[bytes], t: Tensor, first: int = 0, count: int | None = None,
          buf: bytearray | None = None) -> np.ndarray:
    """Elements ``first`` to ``first + count`` of tensor ``t`` (all of it by default), as its dtype,
    read into ``buf`` when given (reused between blocks: no allocation per read)."""
    itemsize = np.dtype(DTYPES[t.dtype]).itemsize
    total = (t.end - t.begin) // itemsize
    count = total - first if count is None else count
    need = count * itemsize
    f.seek(t.begin + first * itemsize)
    if buf is None or len(buf) < need:
        buf = bytearray(need)
    view = memoryview(buf)[:need]
    got = 0
    while got < need:
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise FormatError(f"{getattr(f, 'name', 'update')}: truncated")
        got += k
    return np.frombuffer(buf, dtype=DTYPES[t.dtype], count=count)


def aggregate(updates: list[tuple[str, Path, int]], out_file: Path, *, base_file: Path | None = None,
              trim: int = 0, max_norm_ratio: float | None = None,
              metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the weighted mean of ``updates`` to ``out_file`` (safetensors), tensor by tensor.

    Args:
        updates: (label, safetensors path, example count >= 1) per site; at least one. The label
            names the site and its return bundle in every refusal.
        out_file: the file to write (replaced atomically when whole).
        base_file: the base version's weights, whose layout every update must have (optional).
        trim: 0 for FedAvg; k >= 1 for the coordinate-wise trimmed mean dropping k values each side
            (needs more than 2k updates).
        max_norm_ratio: R >= 1 to refuse an update whose L2 norm (of update - base with
            ``base_file``, else of the update) is more than R times the median of the others'
            norms (needs 2 updates or more; :func:`update_norms`); None: no such check.
        metadata: strings for the header's ``__metadata__``.
    Returns:
        ``{"tensors", "bytes", "method", "norms"}`` (bytes: the file's size; norms: label -> L2
        norm, only with ``max_norm_ratio``).
    Raises:
        UsageError: no updates, too few for ``trim`` or ``max_norm_ratio``, a ratio below 1.
        FormatError: layouts differ, a NaN or infinity (naming the update and tensor).
        PolicyError: an update's norm is past ``max_norm_ratio`` (naming it).
        PlaceError: reading or writing failed. Nothing is written when any of these is raised.
    """
    if not updates:
        raise UsageError("no model updates to aggregate")
    if trim < 0 or (trim and len(updates) <= 2 * trim):
        raise UsageError(f"--trim {trim} needs more than {2 * trim} updates; there are {len(updates)}")
    if max_norm_ratio is not None:
        if not max_norm_ratio >= 1 or not math.isfinite(max_norm_ratio):
            raise UsageError(f"--max-norm-ratio {max_norm_ratio} must be a finite number of at least 1")
        if len(updates) < 2:
            raise UsageError("--max-norm-ratio compares each update with the others': it needs 2 updates or more")
    per = [read_header(path) for _, path, _ in updates]  # each file's own offsets
    headers = {label: h for (label, _, _), h in zip(updates, per)}
    if base_file is not None:
        headers = {"the base model": read_header(base_file), **headers}
    check_alike(headers)
    norms: dict[str, float] = {}
    if max_norm_ratio is not None:
        norms = update_norms(updates, base_file)
        _refuse_outliers(norms, max_norm_ratio, "update - base" if base_file is not None else "update")
    layout = per[0]
    names = sorted(layout, key=lambda k: layout[k].begin)
    weights = np.array([w for _, _, w in updates], dtype=np.float64)
    weights /= weights.sum()

    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        t = layout[name]
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.end - t.begin]}
        offset += t.end - t.begin
    if metadata:
        header["__metadata__"] = dict(metadata)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    make_dirs(out_file.parent)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    files: list[IO[bytes]] = []
    labels = [label for label, _, _ in updates]
    try:
        files += (_open(path) for _, path, _ in updates)  # in the try: a failed open closes the others
        with _Output(tmp) as out:
            out.write(struct.pack("<Q", len(head)) + head)

            def work(task: tuple[str, int, int]) -> np.ndarray:
                name, first, count = task
                parts = [_window(f, p[name], first, count) for f, p in zip(files, per)]
                return _average(parts, labels, weights, trim, name)

            tasks = [(name, first, min(window, size - first))
                     for name in names
                     for size, window in [(math.prod(layout[name].shape), _window_elements(layout[name], len(files)))]
                     for first in range(0, size, window)]
            for chunk in _ordered(work, tasks):
                out.write(chunk.data)
        os.replace(tmp, out_file)
        fsync_dir(out_file.parent)
    except OSError as exc:
        raise PlaceError("medium", str(out_file), f"--out {out_file.parent}: cannot write ({exc.strerror or exc})") from None
    finally:
        for f in files:
            f.close()
        if tmp.exists():
            tmp.unlink()
    result: dict[str, Any] = {"tensors": len(names), "bytes": out_file.stat().st_size,
                              "method": f"trimmed-mean:{trim}" if trim else "fedavg"}
    if norms:
        result["norms"] = norms
    return result


def update_norms(updates: list[tuple[str, Path, int]], base_file: Path | None = None) -> dict[str, float]:
    """The L2 norm of each update over all its tensors: of (update - base) with ``base_file``,
    else of the update itself; computed in float64, window by window like the mean.

    Args:
        updates: (label, safetensors path, example count) per site, layouts already alike
            (:func:`check_alike`); base_file: the base version's weights, or None.
    Returns:
        label -> norm (a float >= 0).
    Raises:
        FormatError: a NaN or infinity (naming the update and tensor). PlaceError: unreadable.
    """
    paths = [path for _, path, _ in updates] + ([base_file] if base_file is not None else [])
    per = [read_header(p) for p in paths]
    files: list[IO[bytes]] = []
    labels = [label for label, _, _ in updates] + ["the base model"]
    layout = per[0]
    try:
        files += (_open(p) for p in paths)
        def work(task: tuple[str, int, int]) -> np.ndarray:
            name, first, count = task
            parts = [_window(f, p[name], first, count) for f, p in zip(files, per)]
            sums = np.zeros(len(updates), dtype=np.float64)
            for a in range(0, count, BLOCK):
                b = min(count, a + BLOCK)
                base = None if base_file is None else _finite(parts[-1][a:b], labels[-1], name).astype(np.float64)
                for i in range(len(updates)):
                    x = _finite(parts[i][a:b], labels[i], name).astype(np.float64)
                    if base is not None:
                        x -= base
                    sums[i] += float(np.dot(x, x))
            return sums

        tasks = [(name, first, min(window, size - first))
                 for name in sorted(layout, key=lambda k: layout[k].begin)
                 for size, window in [(math.prod(layout[name].shape), _window_elements(layout[name], len(files)))]
                 for first in range(0, size, window)]
        total = np.zeros(len(updates), dtype=np.float64)
        for sums in _ordered(work, tasks):  # fixed order: the same norms on every machine
            total += sums
    finally:
        for f in files:
            f.close()
    return {label: math.sqrt(float(s)) for (label, _, _), s in zip(updates, total)}


def _refuse_outliers(norms: dict[str, float], ratio: float, of: str) -> None:
    """PolicyError naming the first update whose norm is more than ``ratio`` times the median of
    the others' norms (a norm-based screen against a poisoned or broken site: Blanchard et al.,
    2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent", section 1, on
    why one update far from the rest can move a plain average anywhere)."""
    for label, norm in norms.items():
        others = float(np.median([n for other, n in norms.items() if other != label]))
        if norm > ratio * others:
            times = "infinitely many" if others == 0 else f"{norm / others:.3g}"
            raise PolicyError(f"update of {label}: the L2 norm of its {of} is {norm:.6g}, {times} times the median "
                              f"of the others' ({others:.6g}), over --max-norm-ratio {ratio:g}; refused, nothing "
                              "written and no update marked aggregated")


class _Output:
    """The mean's file, written with ``O_DIRECT`` where the file system allows it: straight from
    a page-aligned staging buffer to the disk, no page-cache pages to allocate and copy into
    (measured: 0.2-1.0 s of kernel CPU per GiB written buffered on the build machine, 0.05-0.09
    s direct), the disk's writing overlapping the averaging. Every write but the last is whole
    :data:`STAGE` bytes at a multiple of it (``O_DIRECT`` needs offsets, lengths and addresses
    aligned to the device's block: open(2), "O_DIRECT"); the last is padded to a page and the
    file cut back to its length. Where ``O_DIRECT`` is refused (EINVAL: tmpfs, some network
    file systems) the same bytes are written through the page cache. :meth:`close` fsyncs.

    Raises:
        OSError: from open, write, ftruncate or fsync (callers name the place).
    """

    def __init__(self, path: Path) -> None:
        try:
            self.fd = os.open(path, WRITE_FLAGS | getattr(os, "O_DIRECT", 0), 0o666)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.fd = os.open(path, WRITE_FLAGS, 0o666)
        self.stage = mmap.mmap(-1, STAGE)  # anonymous: page-aligned
        self.view = memoryview(self.stage)
        self.filled = 0
        self.size = 0

    def __enter__(self) -> "_Output":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.close()
        finally:
            self.view.release()
            self.stage.close()
            os.close(self.fd)

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` (any length)."""
        data = memoryview(data).cast("B")
        while len(data):
            k = min(len(data), STAGE - self.filled)
            self.view[self.filled:self.filled + k] = data[:k]
            self.filled += k
            data = data[k:]
            if self.filled == STAGE:
                self._flush(STAGE)

    def _flush(self, length: int) -> None:
        done = 0
        while done < length:
            try:
                done += os.write(self.fd, self.view[done:length])
            except OSError as exc:  # O_DIRECT accepted at open, refused at write: go buffered
                if exc.errno != errno.EINVAL or not fcntl.fcntl(self.fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0):
                    raise
                fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.size += self.filled
        self.filled = 0

    def close(self) -> None:
        """Write what is staged, cut the file to the bytes written, fsync."""
        size = self.size + self.filled
        if self.filled:
            tail = -(-self.filled // mmap.PAGESIZE) * mmap.PAGESIZE
            self.view[self.filled:tail] = bytes(tail - self.filled)
            self._flush(tail)
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise PlaceError("state", str(path), f"{path}: cannot read ({exc.strerror or exc})") from None


def _workers() -> int:
    """Threads for the averaging: one per core this process may run on (numpy's ufuncs release
    the GIL, so blocks of one tensor are averaged on every core at once)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _window_elements(t: Tensor, files: int) -> int:
    """Elements of tensor ``t`` one task maps from each file: a multiple of :data:`BLOCK` such
    that every running task's windows together stay within :data:`MAP_BUDGET` bytes."""
    itemsize = np.dtype(DTYPES[t.dtype]).itemsize
    blocks = MAP_BUDGET // (_workers() * files * BLOCK * itemsize)
    return BLOCK * max(1, min(WINDOW_BLOCKS, blocks))


def _window(f: IO[bytes], t: Tensor, first: int, count: int) -> np.ndarray:
    """Elements ``first`` to ``first + count`` of tensor ``t`` in the open file ``f``, mapped
    read-only (no copy; the pages are the page cache's). The mapping lasts as long as the array
    (unmapped when the last view of it goes): resident file pages are bounded by the windows in
    use, not the file (``MAP_POPULATE`` faults the window in with one call)."""
    itemsize = np.dtype(DTYPES[t.dtype]).itemsize
    begin = t.begin + first * itemsize
    if count == 0:
        return np.empty(0, dtype=DTYPES[t.dtype])
    start = begin - begin % mmap.ALLOCATIONGRANULARITY
    try:
        m = mmap.mmap(f.fileno(), begin + count * itemsize - start, prot=mmap.PROT_READ,
                      flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), offset=start)
    except (OSError, ValueError) as exc:
        raise PlaceError("state", f.name, f"{f.name}: cannot map ({exc})") from None
    return np.frombuffer(m, dtype=DTYPES[t.dtype], count=count, offset=begin - start)


def _ordered(work: Callable[[Any], np.ndarray], tasks: list[Any]) -> Iterator[np.ndarray]:
    """``work(task)`` for every task on a pool of :func:`_workers` threads, yielded in task order;
    at most two tasks per thread are under way or waiting to be consumed (memory stays bounded).
    The first error stops the rest and is raised."""
    workers = _workers()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ferry-aggregate") as pool:
        pending: deque[Future[np.ndarray]] = deque()
        try:
            for task in tasks:
                pending.append(pool.submit(work, task))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def _widen(x: np.ndarray, w: float, bits: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``float32(x) * float32(w)`` for finite fp16 ``x``, rounded once, into ``out``; no table, no
    slow cast: the fp16 bits are moved into a float32 whose value is ``x * 2**-112`` exactly (sign
    to bit 31, exponent and significand shifted by 13: IEEE 754 binary16 and binary32 layouts;
    fp16 subnormals land on float32 subnormals, also exact), which is then multiplied by
    ``w * 2**112`` (exact: a power-of-two scaling of a float32 in range), so the product is
    ``x * w`` rounded once, bit for bit what ``x.astype(float32) * float32(w)`` gives."""
    np.copyto(bits, x.view(np.int16))  # sign-extended: a negative x gives 0xFFFF8000 | low 15 bits
    np.left_shift(bits, 13, out=bits)  # sign ones now fill bits 28-31: keep bit 31 only
    u = bits.view(np.uint32)
    np.bitwise_and(u, np.uint32(0x8FFFFFFF), out=u)
    np.multiply(bits.view(np.float32), np.float32(np.float32(w) * np.float32(2.0 ** 112)), out=out)
    return out


class _Scratch(threading.local):
    """Per-thread buffers of :data:`BLOCK` elements, reused for every block (no allocation per block)."""

    block = 0
    bit_widen = False

    def ready(self) -> "_Scratch":
        """These buffers, (re)made when :data:`BLOCK` differs from their size (tests change it)."""
        if self.block != BLOCK:
            self.bits = np.empty(BLOCK, dtype=np.int32)
            self.mask = np.empty(BLOCK, dtype=np.uint16)
            self.acc = {np.dtype(d): np.empty(BLOCK, dtype=d) for d in (np.float32, np.float64)}
            self.term = {np.dtype(d): np.empty(BLOCK, dtype=d) for d in (np.float32, np.float64)}
            self.block = BLOCK
            # the widening builds float32 subnormals: check that this thread's floating-point
            # mode keeps them (no flush-to-zero, no denormals-are-zero), else use numpy's cast.
            every = np.arange(0x7C00, dtype=np.uint16).view(np.float16)  # every finite x >= 0
            got = _widen(every, 1.0, np.empty(0x7C00, np.int32), np.empty(0x7C00, np.float32))
            self.bit_widen = bool(np.array_equal(got, every.astype(np.float32)))
        return self


_scratch = _Scratch()


def _average(parts: list[np.ndarray], labels: list[str], weights: np.ndarray, trim: int, name: str) -> np.ndarray:
    """The mean of one window of one tensor over every update (``parts[i]``: update ``i``'s
    elements), in the tensor's dtype. FedAvg: ``sum_i float32(x_i) * float32(w_i)``, products
    rounded to float32 and added in update order (float64 for F64), then rounded to the dtype
    once; computed block by block, each element's sum in the same order whatever the blocks or
    threads, so the result never depends on the machine. Trimmed mean: the float64 mean of the
    middle values of each coordinate."""
    s = _scratch.ready()
    cast = halfcast()
    dtype = parts[0].dtype
    count = len(parts[0])
    out = np.empty(count, dtype=dtype)
    wide = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    w = [wide.type(x) for x in weights]
    for a in range(0, count, BLOCK):
        b = min(count, a + BLOCK)
        k = b - a
        if trim:
            stack = np.stack([_finite(p[a:b], labels[i], name).astype(np.float64) for i, p in enumerate(parts)])
            stack.sort(axis=0)
            np.copyto(out[a:b], stack[trim:len(parts) - trim].mean(axis=0), casting="unsafe")
            continue
        acc, term = s.acc[wide][:k], s.term[wide][:k]
        if dtype == np.float16 and cast is not None:
            # SIMD casts (onnxruntime): widen exactly, weigh, add in update order; NaN and
            # infinity survive the widening, so one check of the sum finds them (w_i > 0)
            for i, p in enumerate(parts):
                cast.widen(p[a:b], term)
                np.multiply(term, w[i], out=acc if i == 0 else term)
                if i:
                    np.add(acc, term, out=acc)
            if not np.isfinite(acc).all():
                for i, p in enumerate(parts):
                    _finite(p[a:b], labels[i], name)
            cast.narrow(acc, out[a:b])
            continue
        for i, p in enumerate(parts):
            x = p[a:b]
            into = acc if i == 0 else term
            if dtype == np.float16:
                # an all-ones exponent is infinity or NaN (IEEE 754 binary16): refused by name
                if k and np.bitwise_and(x.view(np.uint16), 0x7C00, out=s.mask[:k]).max() == 0x7C00:
                    _finite(x, labels[i], name)
                if s.bit_widen:
                    _widen(x, w[i], s.bits[:k], into)
                else:
                    np.multiply(x, w[i], out=into, dtype=np.float32)
            else:
                np.multiply(x, w[i], out=into)
            if i:
                np.add(acc, term, out=acc)
        if dtype != np.float16 and not np.isfinite(acc).all():  # w_i > 0: a NaN or infinity in x_i shows here
            for i, p in enumerate(parts):  # find whose, then refuse it by name
                _finite(p[a:b], labels[i], name)
            raise FormatError(f"tensor {name!r}: the weighted mean overflows {wide}")
        np.copyto(out[a:b], acc, casting="unsafe")
    return out


def check_finite(path: Path, label: str) -> int:
    """Refuse a safetensors file holding NaN or infinity, reading a block of a tensor at a time.

    Returns:
        The number of tensors. Raises: FormatError naming ``label`` and the tensor.
    """
    layout = read_header(path)
    with open(path, "rb") as f:
        for name, t in layout.items():
            size = math.prod(t.shape)
            for first in range(0, size, BLOCK):
                _finite(_read(f, t, first, min(BLOCK, size - first)), label, name)
    return len(layout)


def _finite(x: np.ndarray, label: str, name: str) -> np.ndarray:
    """``x`` if every value is finite; else FormatError naming the update and tensor."""
    if x.dtype == np.float16:  # an all-ones exponent is infinity or NaN (IEEE 754 binary16)
        finite = bool(((x.view(np.uint16) & 0x7C00) != 0x7C00).all())
    else:
        finite = bool(np.isfinite(x).all())
    if not finite:
        raise FormatError(f"update of {label}: tensor {name!r} holds NaN or infinity; refused")
    return x


def write_provenance(folder: Path, doc: dict[str, Any]) -> Path:
    """``folder/provenance.json``: which sites, return bundles, keys and weights made this version."""
    path = folder / PROVENANCE_NAME
    write_atomic(path, json.dumps(doc, sort_keys=True, indent=1).encode(), "medium")
    return path
