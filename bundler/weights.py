"""What a model variant's weight files say about themselves: precision and quantization.

The hub reads them so that a variant's declaration in the spec is checked against the files,
never just believed (docs/spec.md, *Variants*, "What ferry reads from the files"):

- **safetensors**: the JSON header's ``dtype`` of each tensor; the precision is the dtype of
  most parameters (:func:`manifests.modelpack.safetensors_facts`, the one home of that rule,
  which the edge's ModelPack publishing uses too).
- **GGUF** (ggml's ``docs/gguf.md``, v2/v3): ``general.file_type`` (llama.cpp's ``llama_ftype``,
  e.g. 15 = ``q4_k_m``), else the ggml type of most tensor elements. Float files (``f32``,
  ``f16``, ``bf16``) give a precision, the rest a quantization.
- **ONNX** (``onnx.proto``, protobuf wire format): the ``data_type`` of the graph's
  initializers (``ModelProto.graph`` = 7, ``GraphProto.initializer`` = 5, ``TensorProto.dims``
  = 1, ``data_type`` = 2); the precision is the type of most elements. Tensor data is skipped
  by seeking, never read.
- Other formats are not read: their declaration is taken as given.

Headers are read bounded (safetensors: :data:`manifests.modelpack.SAFETENSORS_HEADER_MAX`,
GGUF: :data:`bundler.chunker.GGUF_HEADER_READS`, ONNX: at most :data:`ONNX_MAX_FIELDS` fields
visited); a header that does not parse says nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from manifests.errors import FormatError, PlaceError, SpecError
from manifests.modelpack import SAFETENSORS_HEADER_MAX, safetensors_facts, safetensors_header_length

from .chunker import GGUF_HEADER_READS, GGUF_MAGIC, _Cursor, _Malformed, _Short

#: llama.cpp ``enum llama_ftype`` (``general.file_type`` in GGUF, docs/gguf.md), lower case.
GGUF_FILE_TYPES = {
    0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k", 11: "q3_k_s",
    12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s", 17: "q5_k_m", 18: "q6_k",
    19: "iq2_xxs", 20: "iq2_xs", 21: "q2_k_s", 22: "iq3_xs", 23: "iq3_xxs", 24: "iq1_s", 25: "iq4_nl",
    26: "iq3_s", 27: "iq3_m", 28: "iq2_s", 29: "iq2_m", 30: "iq4_xs", 31: "iq1_m", 32: "bf16",
    36: "tq1_0", 37: "tq2_0",
}
#: ggml ``enum ggml_type`` of a tensor (docs/gguf.md), lower case.
GGML_TYPES = {
    0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0", 9: "q8_1", 10: "q2_k",
    11: "q3_k", 12: "q4_k", 13: "q5_k", 14: "q6_k", 15: "q8_k", 16: "iq2_xxs", 17: "iq2_xs", 18: "iq3_xxs",
    19: "iq1_s", 20: "iq4_nl", 21: "iq3_s", 22: "iq2_s", 23: "iq4_xs", 24: "i8", 25: "i16", 26: "i32",
    27: "i64", 28: "f64", 29: "iq1_m", 30: "bf16",
}
#: GGUF float types as ModelPack precision names (manifests.modelpack uses the same words).
_GGUF_FLOATS = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "f64": "fp64"}
_FILE_TYPE_KEY = b"general.file_type"
#: ONNX ``TensorProto.DataType`` -> precision (onnx.proto; float8 kinds are all ``fp8``).
ONNX_TYPES = {1: "fp32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
              10: "fp16", 11: "fp64", 12: "uint32", 13: "uint64", 16: "bf16", 17: "fp8", 18: "fp8", 19: "fp8",
              20: "fp8", 21: "uint4", 22: "int4"}
#: The most protobuf fields an ONNX read visits before it gives up (saying nothing).
ONNX_MAX_FIELDS = 1_000_000


class _Wire:
    """Protobuf wire-format reader over a seekable stream, bounded by ``end`` and a field budget."""

    def __init__(self, f: BinaryIO, budget: int) -> None:
        self.f, self.budget = f, budget

    def varint(self) -> int:
        value = 0
        for shift in range(0, 70, 7):
            b = self.f.read(1)
            if not b:
                raise _Malformed
            value |= (b[0] & 0x7F) << shift
            if b[0] < 0x80:
                return value
        raise _Malformed

    def fields(self, end: int) -> Iterator[tuple[int, int, int]]:
        """(field number, wire type, value or length) up to ``end``; a length-delimited field's
        bytes start at the stream's position and the caller skips or descends into them."""
        while self.f.tell() < end:
            self.budget -= 1
            if self.budget < 0:
                raise _Malformed
            key = self.varint()
            number, wire = key >> 3, key & 7
            if wire == 0:
                yield number, wire, self.varint()
            elif wire == 1 or wire == 5:
                self.f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
            elif wire == 2:
                n = self.varint()
                start = self.f.tell()
                if start + n > end:
                    raise _Malformed
                yield number, wire, n
                self.f.seek(start + n)
            else:
                raise _Malformed
            if self.f.tell() > end:
                raise _Malformed


def onnx_precision(f: BinaryIO, size: int) -> str | None:
    """The precision of an ONNX model: the data type holding the most initializer elements.

    Args:
        f: the ``.onnx`` file, seekable, at any position.
        size: its size in bytes.
    Returns:
        a name from :data:`ONNX_TYPES`; None when the file does not parse as a ModelProto
        within :data:`ONNX_MAX_FIELDS` fields, has no initializers (external weights are still
        listed as initializers, so they count), or uses an unknown type.
    """
    wire = _Wire(f, ONNX_MAX_FIELDS)
    elements: dict[int, int] = {}
    try:
        f.seek(0)
        for number, kind, n in wire.fields(size):
            if number != 7 or kind != 2:  # ModelProto.graph
                continue
            graph_end = f.tell() + n
            for g_number, g_kind, g_n in wire.fields(graph_end):
                if g_number != 5 or g_kind != 2:  # GraphProto.initializer
                    continue
                dims: list[int] = []
                data_type = 0
                for t_number, t_kind, t_value in wire.fields(f.tell() + g_n):
                    if t_number == 1 and t_kind == 0:
                        dims.append(t_value)
                    elif t_number == 1 and t_kind == 2:  # packed dims
                        packed_end = f.tell() + t_value
                        while f.tell() < packed_end:
                            dims.append(wire.varint())
                        if f.tell() != packed_end:
                            raise _Malformed
                    elif t_number == 2 and t_kind == 0:
                        data_type = t_value
                elements[data_type] = elements.get(data_type, 0) + math.prod(dims)
    except (_Malformed, OSError, ValueError):
        return None
    if not elements:
        return None
    return ONNX_TYPES.get(max(elements.items(), key=lambda kv: (kv[1], -kv[0]))[0])


@dataclass(frozen=True)
class WeightFacts:
    """What the files say: ``precision`` (``fp16``) and ``quantization`` (``q4_k_m``), each None
    when no file tells; ``read`` lists the files whose header gave them."""

    precision: str | None = None
    quantization: str | None = None
    read: tuple[str, ...] = ()


def gguf_kind(head: bytes, size: int) -> str | None:
    """The quantization of a GGUF file from its first bytes: ``general.file_type`` named by
    :data:`GGUF_FILE_TYPES`, else the ggml type (:data:`GGML_TYPES`) holding the most tensor
    elements.

    Args:
        head: the file's first bytes (enough for its header; every length is bounded by ``size``).
        size: the file's size in bytes.
    Returns:
        a lower-case type name; None when the header is not whole in ``head``, malformed, not
        GGUF v2/v3, or names an unknown type.
    """
    cur = _Cursor(head, size)
    try:
        cur.skip(4)
        if head[:4] != GGUF_MAGIC or cur.u32() not in (2, 3):
            return None
        tensor_count, kv_count = cur.u64(), cur.u64()
        if kv_count * 13 + tensor_count * 24 > size - cur.pos:
            return None
        file_type: int | None = None
        for _ in range(kv_count):
            key, kind = cur.string(), cur.u32()
            if key == _FILE_TYPE_KEY and kind == 4:  # uint32
                file_type = cur.u32()
            else:
                cur.value(kind)
        elements: dict[int, int] = {}
        for _ in range(tensor_count):
            cur.string()
            n_dims = cur.u32()
            if n_dims > 4:  # GGML_MAX_DIMS
                return None
            dims = [cur.u64() for _ in range(n_dims)]
            ggml = cur.u32()
            cur.u64()
            elements[ggml] = elements.get(ggml, 0) + math.prod(dims)
    except (_Short, _Malformed):
        return None  # the whole header (tensor infos too) must be read for the file to say anything
    if file_type is not None:
        return GGUF_FILE_TYPES.get(file_type)
    if not elements:
        return None
    return GGML_TYPES.get(max(elements.items(), key=lambda kv: (kv[1], -kv[0]))[0])


def _read_gguf(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        for limit in GGUF_HEADER_READS:
            f.seek(0)
            head = f.read(min(limit, size))
            kind = gguf_kind(head, size)
            if kind is not None or len(head) >= size:
                return kind
    return None


def _read_safetensors(path: Path) -> tuple[int, str | None]:
    with open(path, "rb") as f:
        try:
            length = safetensors_header_length(f.read(8))
            if length > SAFETENSORS_HEADER_MAX:
                return 0, None
            return safetensors_facts(f.read(length))
        except FormatError:
            return 0, None


def weight_facts(files: Iterable[tuple[str, Path]]) -> WeightFacts:
    """Read precision and quantization from a variant's files (bounded header reads).

    Args:
        files: (path inside the model, local file) pairs.
    Returns:
        the :class:`WeightFacts`; safetensors files vote by parameter count, GGUF and ONNX
        files by file.
    Raises:
        PlaceError: a weight file cannot be read (names the source).
    """
    params: dict[str, int] = {}
    quant: dict[str, int] = {}
    read: list[str] = []
    for rel, local in files:
        low = rel.lower()
        try:
            if low.endswith(".safetensors"):
                count, precision = _read_safetensors(local)
                if precision:
                    params[precision] = params.get(precision, 0) + max(count, 1)
                    read.append(rel)
            elif low.endswith(".gguf"):
                kind = _read_gguf(local, os.stat(local).st_size)
                if kind:
                    quant[kind] = quant.get(kind, 0) + 1
                    read.append(rel)
            elif low.endswith(".onnx"):
                with open(local, "rb") as f:
                    onnx = onnx_precision(f, os.fstat(f.fileno()).st_size)
                if onnx:
                    params[onnx] = params.get(onnx, 0) + 1
                    read.append(rel)
        except OSError as exc:
            raise PlaceError("source", str(local), f"{local}: cannot read ({exc.strerror or exc})") from None
    precision = max(params.items(), key=lambda kv: kv[1])[0] if params else None
    quantization = None
    if quant:
        top = max(quant.items(), key=lambda kv: kv[1])[0]
        if top in _GGUF_FLOATS:
            precision = precision or _GGUF_FLOATS[top]
        else:
            quantization = top
    return WeightFacts(precision=precision, quantization=quantization, read=tuple(read))


def check_against_files(where: str, precision: str | None, quantization: str | None,
                        facts: WeightFacts) -> tuple[str | None, str | None]:
    """A statement of precision and quantization (a spec variant's, a ModelPack config's),
    checked against what the files say (docs/spec.md, *Variants*: "a declaration the files
    contradict is refused").

    Args:
        where: the field named in errors (``SPEC: spec.models[0].variants[1]``, or
            ``model 'm' (REF): the ModelPack config``).
        precision, quantization: as stated (lower case), None when not given.
        facts: what :func:`weight_facts` read (``read`` names where the facts came from).
    Returns:
        (precision, quantization): the files' word where they tell, else the statement; either
        may be None.
    Raises:
        SpecError: the files contradict the statement (naming both).
    """
    files = ", ".join(facts.read[:3]) + (" ..." if len(facts.read) > 3 else "")
    if precision is not None and facts.precision is not None and precision != facts.precision:
        raise SpecError(f"{where}.precision {precision!r} contradicts the files: {files} hold "
                        f"{facts.precision} weights")
    if quantization is not None and facts.quantization is not None and quantization != facts.quantization:
        raise SpecError(f"{where}.quantization {quantization!r} contradicts the files: {files} are "
                        f"{facts.quantization}")
    return facts.precision or precision, facts.quantization or quantization


def check_declaration(where: str, precision: str | None, quantization: str | None,
                      facts: WeightFacts) -> tuple[str | None, str | None]:
    """The variant's precision and quantization: the declaration, checked against the files
    (:func:`check_against_files`), and at least one of them known (docs/spec.md, *Variants*).

    Args:
        where: the spec field named in errors (``SPEC: spec.models[0].variants[1]``).
        precision, quantization: as declared (lower case), None when not given.
        facts: what :func:`weight_facts` read.
    Returns:
        (precision, quantization): the files' word where they tell, else the declaration.
    Raises:
        SpecError: the files contradict the declaration (naming both), or neither the
            declaration nor the files say anything.
    """
    result = check_against_files(where, precision, quantization, facts)
    if result == (None, None):
        raise SpecError(f"{where}: give precision or quantization (ferry reads them only from safetensors, "
                        "GGUF and ONNX files)")
    return result
