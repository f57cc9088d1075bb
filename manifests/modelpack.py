"""Models as OCI artifacts: the CNCF ModelPack format and modelcar images, as pure builders.

Two forms of one model version (issue 14, item 1), both built from the model's files:

- A **ModelPack artifact** (modelpack/model-spec, ``docs/spec.md`` and ``docs/config.md``): an
  OCI image manifest with ``artifactType`` :data:`MODEL_MANIFEST`, a config of type
  :data:`MODEL_CONFIG`, and one *raw* layer per file (the file's bytes, untouched, so the layer
  digest is the file's sha256 and a layout can hard-link the model store's file as the blob),
  annotated with :data:`FILEPATH` (the path inside the model folder).
- A **modelcar image** (KServe modelcars, Kubernetes image volumes): an ordinary OCI image
  whose single uncompressed tar layer holds the files under ``/models/``, each file's data
  starting on a 4 KiB boundary (:func:`modelcar_plan`: pax padding) so that the layer can
  share the model store's data blocks on file systems with reflinks. This layout is part of
  the bundle format from 1.3 on (docs/bundle-format.md 3.2.3): the hub signs the layer's
  sha256 (:class:`ModelcarHasher`, the one home of its hashing for hub and edge) and each
  file's, and the edge publishes with them without hashing.

The layer media type of a file follows :func:`layer_media_type` (documented in
docs/models-oci.md). Nothing here reads a file: callers pass names, sizes, digests and the
first bytes of safetensors files.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import struct
import tarfile
from dataclasses import dataclass
from typing import Any

from .errors import FormatError
from .oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST

# modelpack/model-spec docs/spec.md "Media types"
MODEL_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"  # the manifest's artifactType
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
DOC = "application/vnd.cncf.model.doc.v1.raw"
CODE = "application/vnd.cncf.model.code.v1.raw"
#: The layer annotation naming a file's path inside the model (spec: "Layer annotations").
FILEPATH = "org.cncf.model.filepath"
#: Where a modelcar image holds the files (KServe modelcars mount ``/models``).
MODELCAR_ROOT = "models"
#: The tag suffix naming the modelcar form beside ``<version>`` (the ModelPack form).
MODELCAR_TAG_SUFFIX = "-modelcar"

_WEIGHT_EXT = frozenset({".safetensors", ".gguf", ".ggml", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5",
                         ".keras", ".pb", ".tflite", ".msgpack", ".npz", ".npy", ".mlmodel", ".engine",
                         ".plan", ".pdparams", ".ot"})
_CODE_EXT = frozenset({".py", ".ipynb", ".sh", ".js", ".ts", ".go", ".rs", ".c", ".cc", ".cpp", ".h",
                       ".hpp", ".cu", ".java", ".r", ".jl", ".lua"})
_DOC_EXT = frozenset({".md", ".rst", ".pdf", ".html", ".adoc"})
_DOC_STEMS = frozenset({"readme", "license", "licence", "notice", "changelog", "model_card", "modelcard",
                        "authors", "citation", "copying"})
_FORMATS = {".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx", ".pt": "pytorch",
            ".pth": "pytorch", ".bin": "pytorch", ".ckpt": "pytorch", ".h5": "keras", ".keras": "keras",
            ".pb": "tensorflow", ".tflite": "tflite"}
#: safetensors dtypes -> ModelPack precision names (spec config.md: "bf16", "fp16", "int8" ...)
_PRECISIONS = {"F64": "fp64", "F32": "fp32", "F16": "fp16", "BF16": "bf16", "F8_E4M3": "fp8",
               "F8_E5M2": "fp8", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
               "U8": "uint8", "BOOL": "bool"}
#: The most header bytes a safetensors file may declare (its format caps it at 100 MB).
SAFETENSORS_HEADER_MAX = 100_000_000


def layer_media_type(path: str) -> str:
    """The ModelPack layer media type of a model file, by this rule (first match wins):

    1. weights (:data:`WEIGHT`): extensions of tensor and graph files — ``.safetensors``,
       ``.gguf``, ``.bin``, ``.pt``/``.pth``/``.ckpt``, ``.onnx``, ``.h5``/``.keras``, ``.pb``,
       ``.tflite``, ``.npz``/``.npy``, ``.msgpack`` and others in ``_WEIGHT_EXT``;
    2. documentation (:data:`DOC`): ``README``, ``LICENSE``, ``NOTICE``, ``CHANGELOG``, model
       cards (any extension), and ``.md``/``.rst``/``.pdf``/``.html``;
    3. code (:data:`CODE`): source files (``.py``, ``.ipynb``, ``.sh``, ``.cu`` ...);
    4. everything else is weight configuration (:data:`WEIGHT_CONFIG`): ``config.json``,
       tokenizers, vocabularies, generation settings — what a runtime reads beside the weights.

    Args:
        path: the file's ``/``-separated path inside the model folder.
    Returns:
        one of :data:`WEIGHT`, :data:`DOC`, :data:`CODE`, :data:`WEIGHT_CONFIG`.
    """
    base = posixpath.basename(path).lower()
    stem, ext = posixpath.splitext(base)
    if ext in _WEIGHT_EXT:
        return WEIGHT
    if stem in _DOC_STEMS or ext in _DOC_EXT:
        return DOC
    if ext in _CODE_EXT:
        return CODE
    return WEIGHT_CONFIG


@dataclass(frozen=True)
class ModelFile:
    """One file of a model version: ``path`` inside the model, ``size`` in bytes, ``digest``
    its ``sha256:<hex>``."""

    path: str
    size: int
    digest: str


@dataclass(frozen=True)
class ModelFacts:
    """What can be read from the files: ``format`` (``safetensors``, ``gguf`` ...),
    ``precision``, ``quantization``, ``parameters`` (a count), each None when unknown."""

    format: str | None = None
    precision: str | None = None
    quantization: str | None = None
    parameters: int | None = None


def safetensors_header_length(prefix: bytes) -> int:
    """The JSON header's length from a safetensors file's first 8 bytes (little-endian u64).

    Raises:
        FormatError: fewer than 8 bytes, or a length over :data:`SAFETENSORS_HEADER_MAX`.
    """
    if len(prefix) < 8:
        raise FormatError("not a safetensors file (shorter than 8 bytes)")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > SAFETENSORS_HEADER_MAX:
        raise FormatError(f"safetensors header of {length} bytes is over the format's limit")
    return int(length)


def safetensors_facts(header: bytes) -> tuple[int, str | None]:
    """Parameter count and precision from a safetensors JSON header (the bytes after the
    8-byte length). Precision is the dtype of most parameters; ``mixed`` never appears since
    the majority wins (biases in fp32 beside fp16 weights are usual).

    Raises:
        FormatError: the header is not a JSON object of tensors with ``dtype`` and ``shape``.
    """
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FormatError("safetensors header is not JSON") from None
    if not isinstance(doc, dict):
        raise FormatError("safetensors header is not a JSON object")
    by_dtype: dict[str, int] = {}
    for name, tensor in doc.items():
        if name == "__metadata__":
            continue
        shape = tensor.get("shape") if isinstance(tensor, dict) else None
        dtype = tensor.get("dtype") if isinstance(tensor, dict) else None
        if not isinstance(dtype, str) or not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise FormatError(f"safetensors tensor {str(name)[:60]!r} lacks a dtype or shape")
        by_dtype[dtype] = by_dtype.get(dtype, 0) + math.prod(shape)
    total = sum(by_dtype.values())
    top = max(by_dtype.items(), key=lambda kv: kv[1])[0] if by_dtype else None
    return total, _PRECISIONS.get(top, top.lower()) if top else None


def model_format(paths: list[str]) -> str | None:
    """The weight format of a model from its file names (the first weight file decides)."""
    for path in sorted(paths):
        ext = posixpath.splitext(path.lower())[1]
        if ext in _FORMATS:
            return _FORMATS[ext]
    return None


def param_size(count: int) -> str:
    """A parameter count as ModelPack's ``paramSize`` (config.md: ``<count><K|M|B|T|Q>``, at
    most one decimal), e.g. 6_700_000_000 -> ``6.7B``, 150_000 -> ``150K``; below 1000, ``count``
    with no prefix is impossible in the grammar, so ``1K`` is the least."""
    count = max(count, 1000)
    for scale, letter in ((10 ** 15, "Q"), (10 ** 12, "T"), (10 ** 9, "B"), (10 ** 6, "M"), (10 ** 3, "K")):
        if count >= scale:
            break
    return f"{count / scale:.1f}".rstrip("0").rstrip(".") + letter


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def layer_descriptor(f: ModelFile) -> dict[str, Any]:
    """A raw layer descriptor for one file: media type by :func:`layer_media_type`, the file's
    own digest and size, and the :data:`FILEPATH` annotation."""
    return {"mediaType": layer_media_type(f.path), "digest": f.digest, "size": f.size,
            "annotations": {FILEPATH: f.path}}


def modelpack_config(name: str, version: str, files: list[ModelFile], facts: ModelFacts,
                     created: str | None = None) -> bytes:
    """The ModelPack config blob (config.md): ``descriptor`` (name, version, createdAt),
    ``config`` (format, precision, quantization, paramSize: only what is known), and
    ``modelfs`` (the raw layers' digests, which are their DiffIDs, in layer order).

    Args:
        name, version: the model's ferry name and version.
        files: the files in layer order (see :func:`modelpack_manifest`).
        facts: what the files tell (:class:`ModelFacts`).
        created: RFC 3339 time, or None to leave it out (keeps the digest reproducible).
    Returns:
        canonical JSON bytes (sorted keys, no spaces).
    """
    descriptor: dict[str, Any] = {"name": name, "version": version}
    if created:
        descriptor["createdAt"] = created
    config: dict[str, Any] = {}
    if facts.format:
        config["format"] = facts.format
    if facts.precision:
        config["precision"] = facts.precision
    if facts.quantization:
        config["quantization"] = facts.quantization
    if facts.parameters:
        config["paramSize"] = param_size(facts.parameters)
    return _json({"descriptor": descriptor, "config": config,
                  "modelfs": {"type": "layers", "diff_ids": [f.digest for f in _ordered(files)]}})


def _ordered(files: list[ModelFile]) -> list[ModelFile]:
    return sorted(files, key=lambda f: f.path)


def modelpack_manifest(config: bytes, config_digest: str, files: list[ModelFile],
                       annotations: dict[str, str] | None = None) -> bytes:
    """The ModelPack manifest: an OCI image manifest with ``artifactType`` :data:`MODEL_MANIFEST`,
    the config, and one raw layer per file sorted by path (spec.md "Manifest").

    Raises:
        FormatError: two files with one path, or a path that is absolute or climbs (``..``).
    """
    _check_paths(files)
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": MODEL_MANIFEST,
        "config": {"mediaType": MODEL_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [layer_descriptor(f) for f in _ordered(files)],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return _json(doc)


def _check_paths(files: list[ModelFile]) -> None:
    seen: set[str] = set()
    for f in files:
        norm = posixpath.normpath(f.path)
        if f.path.startswith("/") or norm != f.path or norm == ".." or norm.startswith("../") or not f.path:
            raise FormatError(f"model file path {f.path!r} is not a clean relative path")
        if f.path in seen:
            raise FormatError(f"model file path {f.path!r} appears twice")
        seen.add(f.path)


# --------------------------------------------------------------------------- modelcar


def modelcar_entries(files: list[ModelFile]) -> list[tuple[str, ModelFile | None]]:
    """The tar members of a modelcar layer in order: folders (``models/``, ``models/sub/``)
    as ``(name, None)`` and files as ``(models/<path>, file)``, sorted, folders first."""
    _check_paths(files)
    folders = {MODELCAR_ROOT}
    for f in files:
        parts = f.path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join([MODELCAR_ROOT, *parts[:i]]))
    out: list[tuple[str, ModelFile | None]] = [(d + "/", None) for d in sorted(folders)]
    out += [(f"{MODELCAR_ROOT}/{f.path}", f) for f in _ordered(files)]
    return out


#: mtime of every modelcar member (2026-01-01T00:00:00Z): the layer is reproducible.
MODELCAR_MTIME = 1767225600

#: Every file's data in a modelcar layer starts at a multiple of this many bytes (4 KiB, the
#: block size of ext4, XFS and btrfs on x86-64 and arm64 with 4 KiB pages), so that a file
#: system with reflinks (XFS, btrfs) can share the model store's data blocks with the layer
#: (``FICLONERANGE`` needs block-aligned offsets). The padding is a POSIX pax ``comment`` record
#: (POSIX.1-2008, pax "Extended Header Keywords": readers ignore it), so the layer stays a
#: standard tar that GNU tar, Python's tarfile, umoci and containerd unpack.
MODELCAR_ALIGN = 4096

_BLOCK = 512  # tar's record size (POSIX ustar)


def tar_header(name: str, size: int, *, folder: bool) -> bytes:
    """A PAX tar header block for one modelcar *folder* member (or an unaligned file): owner
    0:0, mode 0755 (folders) or 0644 (files), fixed mtime. A file's bytes follow, padded to 512
    bytes (:func:`tar_padding`); :data:`TAR_END` closes the archive. Files of a modelcar use
    :func:`aligned_file_header` instead."""
    info = tarfile.TarInfo(name)
    info.size = 0 if folder else size
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    info.mtime = MODELCAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def pax_record(key: str, value: str) -> bytes:
    """One pax extended header record, ``"<length> <key>=<value>\n"``, where ``<length>`` counts
    the whole record in bytes, its own digits included (POSIX.1-2008, pax, "pax Extended Header")."""
    body = f" {key}={value}\n".encode("utf-8")
    length = 0
    while (total := len(body) + len(str(length))) != length:
        length = total
    return str(length).encode() + body


def _comment_of_length(length: int) -> bytes | None:
    """A ``comment`` record of exactly ``length`` bytes, or None (no record has 100, 1000 ...
    bytes: the length's own digits would grow)."""
    if length < len(pax_record("comment", "")):
        return None
    value = "0" * max(length - len(" comment=\n") - len(str(length)), 0)
    record = pax_record("comment", value)
    return record if len(record) == length else None


def aligned_file_header(name: str, size: int, at: int) -> bytes:
    """The tar header blocks of a modelcar file member that starts at byte ``at`` of the layer
    (a multiple of 512), such that the file's data, right after them, starts at a multiple of
    :data:`MODELCAR_ALIGN`.

    Two headers (POSIX.1-2008, pax): an extended header (typeflag ``x``) whose records give
    ``path`` and ``size`` (so any name length and any size fit) and a ``comment`` record sized
    to pad, then the ustar header of the file itself (owner 0:0, mode 0644, fixed mtime; its name
    field holds the first 100 bytes of the name, the pax ``path`` wins).

    Args:
        name: the member's path in the tar (``models/<path>``).
        size: the file's size in bytes.
        at: the header's offset in the layer, in bytes, a multiple of 512.
    Returns:
        the header bytes (a multiple of 512 long, 1536 to 5120 bytes for names under ~3 KiB).
    Raises:
        FormatError: ``at`` is not a multiple of 512.
    """
    if at % _BLOCK:
        raise FormatError(f"a tar member cannot start at byte {at} (not a multiple of {_BLOCK})")
    records = pax_record("path", name) + pax_record("size", str(size))
    padded = (-(at + 2 * _BLOCK)) % MODELCAR_ALIGN  # the extended header's data, a multiple of 512
    while True:
        comment = _comment_of_length(padded - len(records)) or _comment_of_length(padded - len(records) - 1)
        if comment is not None and padded > 0:
            break
        padded += MODELCAR_ALIGN
    data = records + comment
    ext = tarfile.TarInfo("././@PaxHeader")
    ext.type, ext.size, ext.mtime, ext.mode = tarfile.XHDTYPE, len(data), MODELCAR_MTIME, 0o644
    ext.uname = ext.gname = ""
    encoded = name.encode("utf-8")
    field = encoded[:100].decode("utf-8", errors="ignore")
    info = tarfile.TarInfo(field)
    info.size = size if size < 8 ** 11 else 0  # the pax size record wins
    info.type, info.mode, info.mtime = tarfile.REGTYPE, 0o644, MODELCAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    out = (ext.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict") + data
           + tar_padding(len(data)) + info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict"))
    assert (at + len(out)) % MODELCAR_ALIGN == 0, "pax padding miscounted"
    return out


def tar_padding(size: int) -> bytes:
    """Zero bytes that end a member of ``size`` bytes on a 512-byte boundary."""
    return b"\0" * (-size % _BLOCK)


#: Two zero blocks end a tar archive (POSIX ustar).
TAR_END = b"\0" * 1024


@dataclass(frozen=True)
class ModelcarMember:
    """One member of a modelcar layer as laid out by :func:`modelcar_plan`: its ``header``
    bytes, starting at byte ``offset`` of the layer, and the ``file`` whose data follows (None
    for a folder). The data starts at :attr:`data_offset` (a multiple of :data:`MODELCAR_ALIGN`
    for files) and is followed by :attr:`padding` zero bytes; the next member starts at
    :attr:`end`."""

    header: bytes
    offset: int
    file: ModelFile | None

    @property
    def size(self) -> int:
        return self.file.size if self.file else 0

    @property
    def data_offset(self) -> int:
        return self.offset + len(self.header)

    @property
    def padding(self) -> int:
        return -self.size % _BLOCK

    @property
    def end(self) -> int:
        return self.data_offset + self.size + self.padding


def modelcar_plan(files: list[ModelFile]) -> list[ModelcarMember]:
    """The modelcar layer's members in order (:func:`modelcar_entries`) with their headers and
    offsets: folders as plain PAX headers, files with :func:`aligned_file_header` so that each
    file's data starts at a multiple of :data:`MODELCAR_ALIGN`. The layer is these members
    (header, data, padding each) followed by :data:`TAR_END`; it depends on the files' paths
    and sizes only, never their digests or bytes.

    Raises:
        FormatError: as :func:`modelcar_entries`.
    """
    out: list[ModelcarMember] = []
    at = 0
    for name, f in modelcar_entries(files):
        header = tar_header(name, 0, folder=True) if f is None else aligned_file_header(name, f.size, at)
        member = ModelcarMember(header, at, f)
        out.append(member)
        at = member.end
    return out


class ModelcarHasher:
    """The sha256 of the modelcar layer :func:`modelcar_plan` lays out, fed the files' bytes
    in layer order (sorted by path): headers, padding and :data:`TAR_END` come from the plan,
    so the caller streams only the file contents it already reads. The one home of this rule
    for the hub (``ferry export`` records the digest, docs/bundle-format.md 3.2.3) and the
    edge (staging, :class:`importer.apply.modelpack.StagingHasher`).

    Use: for each file in layer order ``start(path)``, ``update(data)`` with its bytes,
    ``end(size)``; then :meth:`digest`. A hub that saved ``sha``'s state after a file
    (:attr:`hashed`) may go on from there: :meth:`resume_after`.

    Args:
        files: (path inside the model, size in bytes) of every file of the model version.
        sha: the SHA-256 object to feed (``update``, ``hexdigest``); a fresh
            ``hashlib.sha256()`` when not given.
    Raises:
        FormatError: paths no modelcar can hold (:func:`modelcar_entries`); a file started
        out of layer order, one whose size differs from the plan's, or :meth:`digest` before
        every file ended.
    """

    def __init__(self, files: list[tuple[str, int]], sha: Any = None) -> None:
        self.plan = modelcar_plan([ModelFile(p, n, "") for p, n in files])
        self._sha = sha if sha is not None else hashlib.sha256()
        self._next = 0

    @property
    def sha(self) -> Any:
        """The SHA-256 object being fed."""
        return self._sha

    @property
    def hashed(self) -> int:
        """Bytes of the layer hashed after the last :meth:`end` (the end of that member)."""
        return self.plan[self._next - 1].end if self._next else 0

    def resume_after(self, path: str) -> int:
        """Go on after file ``path``, whose member and all before it the caller's ``sha``
        (restored from a saved state) has hashed; only before the first :meth:`start`.

        Returns:
            the layer offset ``sha`` must have hashed exactly (the member's :attr:`~ModelcarMember.end`).
        Raises:
            FormatError: ``path`` is not a file of the plan, or hashing has begun.
        """
        if self._next:
            raise FormatError("the modelcar layer's hash can only resume before it begins")
        for i, member in enumerate(self.plan):
            if member.file is not None and member.file.path == path:
                self._next = i + 1
                return member.end
        raise FormatError(f"model file {path!r} is not in the modelcar layer")

    @property
    def layer_files(self) -> tuple[tuple[str, int], ...]:
        """(path, size) of every file in layer order."""
        return tuple((m.file.path, m.file.size) for m in self.plan if m.file)

    def start(self, path: str) -> None:
        plan = self.plan
        while self._next < len(plan) and plan[self._next].file is None:  # folders before this file
            self._sha.update(plan[self._next].header)
            self._next += 1
        member = plan[self._next] if self._next < len(plan) else None
        if member is None or member.file is None or member.file.path != path:
            raise FormatError(f"model file {path!r} is out of modelcar layer order")
        self._sha.update(member.header)

    def update(self, data: bytes | memoryview) -> None:
        self._sha.update(data)

    def end(self, size: int) -> None:
        member = self.plan[self._next]
        if member.size != size:
            raise FormatError(f"model file {member.file.path if member.file else ''!r} has {size} bytes, "
                              f"the layer plan {member.size}")
        self._sha.update(bytes(member.padding))
        self._next += 1

    def digest(self) -> str:
        """``sha256:<hex>`` of the whole layer."""
        while self._next < len(self.plan) and self.plan[self._next].file is None:  # a model of no files
            self._sha.update(self.plan[self._next].header)
            self._next += 1
        if self._next != len(self.plan):
            raise FormatError("the modelcar layer's digest needs every file, in layer order")
        self._sha.update(TAR_END)
        self._next += 1  # a second call fails: the hash is final
        return "sha256:" + self._sha.hexdigest()


def modelcar_layer_size(files: list[ModelFile]) -> int:
    """The exact byte length of the modelcar layer :func:`modelcar_plan` lays out."""
    plan = modelcar_plan(files)
    return (plan[-1].end if plan else 0) + len(TAR_END)


def modelcar_config(layer_digest: str, name: str, version: str, architecture: str = "amd64") -> bytes:
    """The image config of a modelcar: ``linux/<architecture>``, the layer's digest as its
    DiffID (the layer is an uncompressed tar), labels naming the model; no entrypoint (the
    image is only mounted or copied from)."""
    return _json({"architecture": architecture, "os": "linux",
                  "config": {"Labels": {"org.opencontainers.image.title": name,
                                        "org.opencontainers.image.version": version}},
                  "rootfs": {"type": "layers", "diff_ids": [layer_digest]}})


def modelcar_manifest(config: bytes, config_digest: str, layer_digest: str, layer_size: int) -> bytes:
    """The modelcar's OCI image manifest: one uncompressed tar layer."""
    return _json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                  "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                  "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}]})
