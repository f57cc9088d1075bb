"""Model source: a ModelPack artifact or a KitOps ModelKit in a registry (issue #14, item 3).

A spec model with ``ref: HOST/REPO:TAG`` (or ``@sha256:...``) is read with the same client
and digest checks as images (:class:`bundler.sources.images.RegistrySource`: a pinned
manifest must hash to its digest, every blob streams through
:class:`manifests.oci.DigestReader`). It is then exported as *the model's files*, like a
model folder, so the same content-defined chunks cut it and a delta between two versions
carries only the chunks that changed, not whole layers.

Which artifacts (by the config's media type, or the manifest's ``artifactType``):

- **ModelPack** (CNCF modelpack/model-spec, ``docs/spec.md`` and ``docs/annotations.md``):
  config ``application/vnd.cncf.model.config.v1+json``; a layer ``...v1.raw`` is one file at
  its ``org.cncf.model.filepath`` annotation; ``...v1.tar``, ``...v1.tar+gzip`` and
  ``...v1.tar+zstd`` are tar archives of files and folders.
- **KitOps ModelKit** (kitops-ml/kitops, ``pkg/lib/constants``): config
  ``application/vnd.kitops.modelkit.config.v1+json`` (the Kitfile); layers
  ``application/vnd.kitops.modelkit.<model|modelpart|dataset|code|docs|prompts>.v1.tar`` (or
  ``+gzip``, ``+zstd``): tar archives of the Kitfile's paths, relative to its folder.

The configs are not carried (ferry's own publish at the edge writes a new ModelPack config),
but a ModelPack config's ``config.precision`` and ``config.quantization`` are read and checked
against the unpacked files (:func:`bundler.weights.check_against_files`): a config the files
contradict is refused; where the files say nothing the config's word stands.
Tar members must be regular files or folders at paths the bundle allows
(:func:`manifests.paths.check_path`); links, devices, absolute paths and ``..`` are refused,
and so is a path two layers both write.

The files are written once under the hub state, ``STATE/oci-models/<manifest hex>/`` (built
under a temporary name, renamed when complete), so the export's chunk cache (keyed on path,
size, mtime, inode) finds them again on the next export of the same digest.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import zstandard

from manifests.errors import FerryError, FormatError, LimitError, PlaceError, SpecError
from manifests.oci import Descriptor, parse_manifest, parse_reference
from manifests.paths import check_path
from manifests.variants import SCHEME_RE

from ..weights import WeightFacts, check_against_files, weight_facts
from . import SourceArtifact
from .models import model_files

MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
KITOPS_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"
FILEPATH_ANNOTATION = "org.cncf.model.filepath"
_READ = 1 << 20
#: Largest ModelPack config read (its facts are a few fields; model-spec puts no bound on it).
MAX_CONFIG_BYTES = 1 << 20


def artifact_kind(config_media_type: str | None, artifact_type: str | None) -> str | None:
    """``"modelpack"``, ``"modelkit"`` or None (neither) for a manifest's config media type and
    ``artifactType``."""
    if config_media_type == MODELPACK_CONFIG or artifact_type == MODELPACK_ARTIFACT:
        return "modelpack"
    if config_media_type == KITOPS_CONFIG:
        return "modelkit"
    return None


def layer_form(media_type: str) -> str | None:
    """How a model layer's bytes are laid out: ``"raw"``, ``"tar"``, ``"tar+gzip"``,
    ``"tar+zstd"``, or None when ``media_type`` is not a ModelPack or ModelKit layer."""
    if not media_type.startswith(("application/vnd.cncf.model.", "application/vnd.kitops.modelkit.")):
        return None
    suffix = media_type.rsplit(".v1.", 1)[-1] if ".v1." in media_type else ""
    return suffix if suffix in ("raw", "tar", "tar+gzip", "tar+zstd") else None


def oci_model(name: str, version: str, ref: str, *, cache: Path,
              insecure_registries: frozenset[str] = frozenset()) -> tuple[SourceArtifact, WeightFacts]:
    """One model from a ModelPack artifact or KitOps ModelKit in a registry, and what it is.

    Args:
        name, version: the model's name and version in the bundle.
        ref: ``HOST/REPO:TAG`` or ``HOST/REPO@sha256:<hex>``.
        cache: the folder under the hub state where fetched models are kept (``STATE/oci-models``).
        insecure_registries: hosts spoken to over plain HTTP or unverified TLS, as for images.
    Returns:
        (the model's files as a :class:`SourceArtifact` of kind ``model``, its precision and
        quantization: the files' word (:func:`bundler.weights.weight_facts`) where they tell,
        else the ModelPack config's; ``read`` names the files, or ``the ModelPack config``).
    Raises:
        SpecError: ``ref`` is not a reference, or names something that is not a ModelPack
            artifact or a ModelKit (an image, an index, an unknown layer type), or its ModelPack
            config is not JSON, or states a precision or quantization the files contradict.
        LimitError: the config is over :data:`MAX_CONFIG_BYTES`.
        RegistryError, VerificationError: the registry failed, or a manifest or blob does not
            match its digest (nothing is kept then).
        PlaceError: a tar member is a link, a device or an unsafe path; the cache cannot be written.
    """
    from .images import RegistrySource

    where = f"model {name!r} ({ref})"
    try:
        parsed = parse_reference(ref)
    except FerryError as exc:
        raise SpecError(f"{where}: {exc}") from None
    source = RegistrySource(parsed, insecure_registries)
    top = source.top()
    data = source.manifest(top)
    doc = parse_manifest(data, top.media_type, where=f"{where}: manifest {top.digest}")
    if doc.is_index:
        raise SpecError(f"{where}: names an index; give the digest of one ModelPack or ModelKit manifest")
    raw: dict[str, Any] = json.loads(data)
    kind = artifact_kind(doc.config.media_type if doc.config else None, raw.get("artifactType"))
    if kind is None:
        shown = doc.config.media_type if doc.config else "none"
        raise SpecError(f"{where}: not a ModelPack artifact or KitOps ModelKit (config media type {shown})")
    for layer in doc.layers:
        if layer_form(layer.media_type) is None:
            raise SpecError(f"{where}: layer {layer.digest} has media type {layer.media_type!r}, "
                            "not a ModelPack or ModelKit layer")
    stated: tuple[str | None, str | None] = (None, None)
    if doc.config is not None and doc.config.media_type == MODELPACK_CONFIG:
        stated = modelpack_stated(_read_config(source, doc.config, where), where)
    folder = cache / top.digest.split(":", 1)[1]
    if not folder.is_dir():
        _fetch(source, doc.layers, folder, where)
    files = model_files(folder)
    facts = weight_facts((f.path or "", f.local_path) for f in files if f.local_path is not None)
    precision, quantization = check_against_files(f"{where}: the ModelPack config's config", *stated, facts)
    said = facts.read if (precision, quantization) == (facts.precision, facts.quantization) \
        else facts.read + ("the ModelPack config",)
    return (SourceArtifact(kind="model", name=name, version=version, files=files),
            WeightFacts(precision=precision, quantization=quantization, read=said))


def modelpack_stated(config: bytes, where: str) -> tuple[str | None, str | None]:
    """The ``config.precision`` and ``config.quantization`` a ModelPack config blob states
    (modelpack/model-spec ``docs/config.md``), lower-cased; None where it states none.

    Raises:
        SpecError: the blob is not a JSON object, or a field is not a word as a spec variant's
            (:data:`manifests.variants.SCHEME_RE`), naming ``where``.
    """
    try:
        doc = json.loads(config)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise SpecError(f"{where}: the ModelPack config is not JSON") from None
    inner = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance(inner, (dict, type(None))):
        raise SpecError(f"{where}: the ModelPack config is not a JSON object with a config object")
    said: list[str | None] = []
    for key in ("precision", "quantization"):
        value = (inner or {}).get(key)
        if value is not None and (not isinstance(value, str) or not SCHEME_RE.fullmatch(value)):
            raise SpecError(f"{where}: the ModelPack config's config.{key} {value!r} is not a word such as "
                            "fp16, int8 or q4_k_m")
        said.append(value.lower() if value is not None else None)
    return said[0], said[1]


def _read_config(source: Any, config: Descriptor, where: str) -> bytes:
    """The config blob, bounded, its digest checked as it streams to the end."""
    if config.size > MAX_CONFIG_BYTES:
        raise LimitError(f"{where}: the ModelPack config is {config.size} bytes, over {MAX_CONFIG_BYTES}")
    stream = source.open(config)
    try:
        data = b"".join(iter(lambda: stream.read(_READ), b""))  # to the end: the digest is checked there
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return data


def _fetch(source: Any, layers: tuple[Descriptor, ...], folder: Path, where: str) -> None:
    """Write every layer's files into ``folder``, built beside it and renamed when complete."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".{folder.name}.{secrets.token_hex(4)}.part"
        tmp.mkdir()
    except OSError as exc:
        raise PlaceError("state", str(folder.parent), f"{folder.parent}: {exc.strerror or exc}") from None
    try:
        written: set[str] = set()
        for layer in layers:
            form = layer_form(layer.media_type)
            stream = source.open(layer)
            try:
                if form == "raw":
                    path = layer.annotations.get(FILEPATH_ANNOTATION)
                    if not path:
                        raise SpecError(f"{where}: raw layer {layer.digest} has no {FILEPATH_ANNOTATION} annotation")
                    _write(tmp, _safe(path, where, layer), stream, written, where)
                else:
                    _untar(tmp, stream, form or "tar", written, where, layer)
                while stream.read(_READ):  # to the end: the digest is checked there
                    pass
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
        if not written:
            raise SpecError(f"{where}: the artifact holds no files")
        os.rename(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PlaceError("state", str(folder), f"{folder}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _safe(path: str, where: str, layer: Descriptor) -> str:
    rel = path.removeprefix("./")
    try:
        return check_path(rel, where=f"{where}: layer {layer.digest}")
    except FormatError as exc:
        raise PlaceError("source", where, str(exc)) from None


def _write(root: Path, rel: str, stream: IO[bytes], written: set[str], where: str, size: int | None = None) -> None:
    if rel in written:
        raise PlaceError("source", where, f"{where}: two layers both hold {rel!r}")
    written.add(rel)
    target = root / rel
    left = size
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "xb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise PlaceError("state", str(target), f"{target}: {exc.strerror or exc}") from None
    with out:
        while left is None or left > 0:
            data = stream.read(_READ if left is None else min(_READ, left))
            if not data:
                break
            try:
                out.write(data)
            except OSError as exc:
                raise PlaceError("state", str(target), f"{target}: {exc.strerror or exc}") from None
            if left is not None:
                left -= len(data)


def _untar(root: Path, stream: BinaryIO, form: str, written: set[str], where: str, layer: Descriptor) -> None:
    """Stream a (compressed) tar layer's regular files into ``root``."""
    fileobj: BinaryIO = stream
    if form == "tar+gzip":
        fileobj = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
    elif form == "tar+zstd":
        fileobj = zstandard.ZstdDecompressor().stream_reader(stream, closefd=False)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for member in _members(tar, where, layer):
                if member.isdir():
                    continue
                extracted = tar.extractfile(member)
                assert extracted is not None
                _write(root, _safe(member.name, where, layer), extracted, written, where, member.size)
    except tarfile.TarError as exc:
        raise SpecError(f"{where}: layer {layer.digest} is not a readable tar ({exc})") from None
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:  # gzip.BadGzipFile is an OSError
        raise SpecError(f"{where}: layer {layer.digest} does not decompress as {form} ({exc})") from None


def _members(tar: tarfile.TarFile, where: str, layer: Descriptor) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        if member.name.rstrip("/") in ("", "."):
            continue
        if not (member.isfile() or member.isdir()):
            raise PlaceError("source", where, f"{where}: layer {layer.digest}: {member.name!r} is a link or "
                             "special file; only files and folders are carried")
        yield member
