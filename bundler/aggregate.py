"""``ferry aggregate``: federated averaging of the model updates sites returned, streaming.

FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", algorithm 1): the new weights are the mean of the sites' weights, each
weighted by its number of training examples. Computed tensor by tensor over safetensors files
(format: https://huggingface.co/docs/safetensors, "Format"), so memory is bounded by the
largest tensor, never the model: each tensor is read block by block (:data:`BLOCK` elements)
from every update in turn into reused buffers, accumulated in float32 (float64 for F64
tensors), and written in the tensors' own dtype, so the working set is in fact a few MiB.

Why float32 is enough for F16 and F32 tensors: each term ``w_i * x_i`` is one float32 product
(an fp16 value is exact in float32: 11 significand bits of 24), and the sum of n terms with
weights summing to 1 carries a relative error of at most about ``n * 2**-24`` (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., section 4.2), far below fp16's
half-ulp of ``2**-11`` for any realistic number of sites; for F32 tensors it is the dtype's
own precision. fp16 terms come from one table gather (``np.take`` of ``w_i * x`` over all
65536 fp16 bit patterns), which widens and weighs in one pass. A NaN or infinity in an update
reaches the block's sum (weights are positive), so the sum is checked once per block and the
updates are searched for the culprit only then.

Robust option: a coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed
Learning", section 3) drops the ``trim`` largest and smallest values of each coordinate before
an unweighted mean; it holds every site's copy of one block at once (memory: sites x block).

Everything is checked before a byte is written: every update's base, tensor names, shapes
and dtypes agree (and with the base model's when given); a NaN or infinity refuses the update
that holds it. The output is written to a temporary file and renamed only when whole.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from manifests.durable import fsync_dir, make_dirs, write_atomic
from manifests.errors import FormatError, PlaceError, UsageError

#: safetensors dtypes ferry averages, and their numpy types (BF16 has no numpy type: refused).
DTYPES: dict[str, Any] = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
MAX_HEADER = 100 * 1024 * 1024
WEIGHTS_NAME = "model.safetensors"
#: Elements of a tensor averaged at once: 256 Ki elements is 2 MiB of float64 accumulator (it
#: stays in the CPU cache); the working set (accumulator, one term, a read buffer per update)
#: is a few MiB whatever the tensor's size (a trimmed mean holds one block per site).
BLOCK = 256 * 1024
PROVENANCE_NAME = "provenance.json"


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
              trim: int = 0, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the weighted mean of ``updates`` to ``out_file`` (safetensors), tensor by tensor.

    Args:
        updates: (label, safetensors path, example count >= 1) per site; at least one.
        out_file: the file to write (replaced atomically when whole).
        base_file: the base version's weights, whose layout every update must have (optional).
        trim: 0 for FedAvg; k >= 1 for the coordinate-wise trimmed mean dropping k values each side
            (needs more than 2k updates).
        metadata: strings for the header's ``__metadata__``.
    Returns:
        ``{"tensors", "bytes", "method"}`` (bytes: the file's size).
    Raises:
        UsageError: no updates, or too few for ``trim``. FormatError: layouts differ, a NaN or
        infinity (naming the update and tensor). PlaceError: reading or writing failed.
    """
    if not updates:
        raise UsageError("no model updates to aggregate")
    if trim < 0 or (trim and len(updates) <= 2 * trim):
        raise UsageError(f"--trim {trim} needs more than {2 * trim} updates; there are {len(updates)}")
    per = [read_header(path) for _, path, _ in updates]  # each file's own offsets
    headers = {label: h for (label, _, _), h in zip(updates, per)}
    if base_file is not None:
        headers = {"the base model": read_header(base_file), **headers}
    check_alike(headers)
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
    files = [open(path, "rb") for _, path, _ in updates]
    bufs = [bytearray(BLOCK * 8) for _ in files]  # one read buffer per update, reused for every block
    acc = {np.dtype(d): np.empty(BLOCK, dtype=d) for d in (np.float32, np.float64)}
    term = {np.dtype(d): np.empty(BLOCK, dtype=d) for d in (np.float32, np.float64)}
    cast = {np.dtype(d): np.empty(BLOCK, dtype=d) for d in DTYPES.values()}
    # fp16: one gather through a 65536-entry table of w_i * x per update (x: every fp16 value)
    # widens and weighs in one pass; numpy's own fp16 cast is the slowest step otherwise.
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    w32 = [np.float32(w) for w in weights]
    with np.errstate(invalid="ignore"):  # the NaN patterns stay NaN: they are refused below
        tables = [halves * w for w in w32]
    try:
        with open(tmp, "wb") as out:
            out.write(struct.pack("<Q", len(head)) + head)
            for name in names:
                t = layout[name]
                dtype = np.dtype(DTYPES[t.dtype])
                wide = np.dtype(np.float64 if dtype == np.float64 else np.float32)
                size = math.prod(t.shape)
                for first in range(0, size, BLOCK):  # a block of elements at a time: memory is bounded
                    count = min(BLOCK, size - first)
                    if trim:
                        parts = (_finite(_read(f, per[i][name], first, count, bufs[i]), updates[i][0], name)
                                 for i, f in enumerate(files))
                        stack = np.stack([p.astype(np.float64) for p in parts])
                        stack.sort(axis=0)
                        result = stack[trim:len(files) - trim].mean(axis=0)
                    else:
                        result = acc[wide][:count]
                        for i, f in enumerate(files):
                            part = _read(f, per[i][name], first, count, bufs[i])
                            into = result if i == 0 else term[wide][:count]
                            if dtype == np.float16:
                                np.take(tables[i], part.view(np.uint16), out=into)
                            else:
                                np.multiply(part, w32[i] if wide == np.float32 else weights[i], out=into)
                            if i:
                                np.add(result, into, out=result)
                        if not np.isfinite(result).all():  # w_i > 0: a NaN or infinity in x_i shows here
                            for i, f in enumerate(files):  # find whose, then refuse it by name
                                _finite(_read(f, per[i][name], first, count, bufs[i]), updates[i][0], name)
                            raise FormatError(f"tensor {name!r}: the weighted mean overflows {wide}")
                    written = cast[dtype][:count]
                    np.copyto(written, result, casting="unsafe")
                    out.write(written.data.cast("B"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, out_file)
        fsync_dir(out_file.parent)
    except OSError as exc:
        raise PlaceError("medium", str(out_file), f"--out {out_file.parent}: cannot write ({exc.strerror or exc})") from None
    finally:
        for f in files:
            f.close()
        if tmp.exists():
            tmp.unlink()
    return {"tensors": len(names), "bytes": out_file.stat().st_size,
            "method": f"trimmed-mean:{trim}" if trim else "fedavg"}


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
