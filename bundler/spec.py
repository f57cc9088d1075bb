"""The bundle spec (``apiVersion: ferry/v1``, ``kind: Bundle``): what the operator asks for.

Parsing is strict so that a typo never silently changes what reaches the air-gapped site:
unknown fields, duplicate keys, duplicate artifacts, missing paths and versions that are
not semantic versions are refused with one line naming the file and the field.
``docs/spec.md`` is the reference for operators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from manifests.bundle import read_bounded
from manifests.errors import FerryError, SpecError, UsageError
from manifests.model import NAME_RE
from manifests.yamldoc import check_expanded
from manifests.units import parse_size  # noqa: F401 - the unit rule's home; bundler.spec.parse_size kept
from manifests.version import parse_version

from .sources.hfcache import HF_SCHEME, resolve_hf

API_VERSION = "ferry/v1"
KIND = "Bundle"
DEFAULT_CHANNEL = "stable"
MAX_SPEC_BYTES = 4 * 1024 * 1024

@dataclass(frozen=True)
class VariantItem:
    """One variant of a model as the spec declares it (docs/spec.md, *Variants*).

    Its files are at ``path`` on the hub or (``ref``, ``HOST/REPO:TAG`` or
    ``HOST/REPO@sha256:...``) a ModelPack artifact or KitOps ModelKit in a registry, exactly one
    given; ``min_memory`` in bytes; ``precision``/``quantization`` as declared (None: read from the
    files, :mod:`bundler.weights`); ``quality`` (benchmark, figure as decimal text) pairs.
    """

    name: str
    path: Path | None
    min_memory: int
    accelerator: str
    precision: str | None = None
    quantization: str | None = None
    quality: tuple[tuple[str, str], ...] = ()
    ref: str | None = None


@dataclass(frozen=True)
class ModelItem:
    """A spec model: files at ``path`` on the hub, or (``ref``) a ModelPack artifact or KitOps
    ModelKit in a registry (:mod:`bundler.sources.oci_models`), or ``variants`` listed best
    quality first (then ``path`` is the first variant's, None when that one is a ``ref``);
    exactly one is given in the spec."""

    name: str
    version: str
    path: Path | None = None
    ref: str | None = None
    variants: tuple[VariantItem, ...] = ()


@dataclass(frozen=True)
class ImageItem:
    ref: str
    layout: Path | None = None
    version: str | None = None


@dataclass(frozen=True)
class ManifestsItem:
    name: str
    version: str
    path: Path


@dataclass(frozen=True)
class Spec:
    """A parsed, checked bundle spec; paths are absolute."""

    file: Path
    name: str
    channel: str
    models: tuple[ModelItem, ...] = ()
    images: tuple[ImageItem, ...] = ()
    manifests: tuple[ManifestsItem, ...] = ()


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class _Reader:
    """Field access that names the file and the field in every error."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def fail(self, where: str, problem: str) -> SpecError:
        return SpecError(f"{self.file}: {where} {problem}")

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be a mapping")
        for key in value:
            if key not in allowed:
                shown = key if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", key) else repr(key)
                raise self.fail(f"{where}.{shown}" if where else shown,
                                f"is not a known field (allowed: {', '.join(allowed)})")
        for key in required:
            if value.get(key) is None:
                raise self.fail(f"{where}.{key}" if where else key, "is required")
        return value

    def string(self, d: dict[str, Any], key: str, where: str) -> str:
        value = d[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", "must be a non-empty string")
        return value

    def name(self, d: dict[str, Any], key: str, where: str) -> str:
        value = self.string(d, key, where)
        if not NAME_RE.match(value):
            raise self.fail(f"{where}.{key}", f"{value!r} must be letters, digits, '.', '_' or '-' (at most 128)")
        return value

    def version(self, d: dict[str, Any], key: str, where: str) -> str:
        value = d[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"{value!r} is not a semantic version (like 1.2.0); quote it")
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", "must be a semantic version like 1.2.0")
        try:
            parse_version(value)
        except FerryError:
            raise self.fail(f"{where}.{key}", f"{value!r} is not a semantic version (like 1.2.0)") from None
        return value

    def path(self, d: dict[str, Any], key: str, where: str, *, folder_only: bool = False,
             hf: bool = False) -> Path:
        text = self.string(d, key, where)
        if hf and text.startswith(HF_SCHEME):  # a snapshot in the local Hugging Face cache, offline
            try:
                return resolve_hf(text)
            except FerryError as exc:
                raise self.fail(f"{where}.{key}", str(exc)) from None
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.file.parent / path
        path = Path(_abspath(path))
        if not path.exists() and not path.is_symlink():
            raise self.fail(f"{where}.{key}", f"{text!r}: no such file or folder ({path})")
        if folder_only and not path.is_dir():
            raise self.fail(f"{where}.{key}", f"{text!r} is not a folder")
        return path

    def items(self, spec: dict[str, Any], key: str, where: str = "spec") -> list[tuple[str, Any]]:
        value = spec.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{where}.{key}", "must be a list")
        return [(f"{where}.{key}[{i}]", item) for i, item in enumerate(value)]


def _abspath(path: Path) -> str:
    import os

    return os.path.abspath(path)


def parse_spec(text: str | bytes, file: Path) -> Spec:
    """Parse spec text read from ``file`` (used to resolve relative paths and in messages)."""
    r = _Reader(file)
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise SpecError(f"{file}: not valid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{file}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except (ValueError, OverflowError) as exc:  # a scalar PyYAML cannot build: a timestamp of year 0
        raise SpecError(f"{file}: not valid YAML: {exc}") from None
    check_expanded(doc, str(file))
    if doc is None:
        raise SpecError(f"{file}: the spec is empty")
    top = r.mapping(doc, "", ("apiVersion", "kind", "metadata", "spec"), ("apiVersion", "kind", "metadata", "spec"))
    if top["apiVersion"] != API_VERSION:
        raise r.fail("apiVersion", f"{top['apiVersion']!r} is not supported (use {API_VERSION})")
    if top["kind"] != KIND:
        raise r.fail("kind", f"{top['kind']!r} is not supported (use {KIND})")
    meta = r.mapping(top["metadata"], "metadata", ("name", "channel"), ("name",))
    name = r.name(meta, "name", "metadata")
    channel = r.name(meta, "channel", "metadata") if meta.get("channel") is not None else DEFAULT_CHANNEL
    spec = r.mapping(top["spec"], "spec", ("models", "images", "manifests"), ())

    models: list[ModelItem] = []
    for where, item in r.items(spec, "models"):
        d = r.mapping(item, where, ("name", "version", "path", "ref", "variants"), ("name", "version"))
        if sum(d.get(k) is not None for k in ("path", "ref", "variants")) != 1:
            raise r.fail(where, "give exactly one of path (files on the hub), ref (a ModelPack artifact "
                                "or KitOps ModelKit in a registry, HOST/REPO:TAG or HOST/REPO@sha256:...) "
                                "and variants (a list)")
        if d.get("ref") is not None:
            models.append(ModelItem(r.name(d, "name", where), r.version(d, "version", where),
                                    ref=r.string(d, "ref", where).strip()))
            continue
        if d.get("path") is not None:
            models.append(ModelItem(r.name(d, "name", where), r.version(d, "version", where),
                                    path=r.path(d, "path", where, hf=True)))
            continue
        variants = tuple(_variant(r, v, w) for w, v in r.items(d, "variants", where))
        if not variants:
            raise r.fail(f"{where}.variants", "is empty")
        _no_duplicates(r, "models", [v.name for v in variants], "name", f"{where}.variants")
        models.append(ModelItem(r.name(d, "name", where), r.version(d, "version", where), path=variants[0].path,
                                variants=variants))
    images: list[ImageItem] = []
    for where, item in r.items(spec, "images"):
        d = r.mapping(item, where, ("ref", "layout", "version"), ("ref",))
        images.append(ImageItem(
            ref=r.string(d, "ref", where).strip(),
            layout=r.path(d, "layout", where, folder_only=True) if d.get("layout") is not None else None,
            version=r.version(d, "version", where) if d.get("version") is not None else None,
        ))
    manifests: list[ManifestsItem] = []
    for where, item in r.items(spec, "manifests"):
        d = r.mapping(item, where, ("name", "version", "path"), ("name", "version", "path"))
        manifests.append(ManifestsItem(r.name(d, "name", where), r.version(d, "version", where),
                                       r.path(d, "path", where)))

    if not (models or images or manifests):
        raise r.fail("spec", "lists nothing to bundle (add models, images or manifests)")
    _no_duplicates(r, "models", [m.name for m in models], "name")
    _no_duplicates(r, "images", [i.ref for i in images], "ref")
    _no_duplicates(r, "manifests", [m.name for m in manifests], "name")
    return Spec(file=file, name=name, channel=channel, models=tuple(models), images=tuple(images),
                manifests=tuple(manifests))


def _no_duplicates(r: _Reader, key: str, values: list[str], field: str, where: str | None = None) -> None:
    seen: dict[str, int] = {}
    where = where or f"spec.{key}"
    for i, value in enumerate(values):
        if value in seen:
            raise r.fail(f"{where}[{i}].{field}", f"{value!r} is listed twice (also {where}[{seen[value]}])")
        seen[value] = i


_VARIANT_FIELDS = ("name", "path", "ref", "minMemory", "accelerator", "precision", "quantization", "quality")


def _variant(r: _Reader, item: Any, where: str) -> VariantItem:
    """One entry of ``variants:`` (docs/spec.md, *Variants*)."""
    from manifests.variants import FIGURE_RE, MAX_FIGURES, SCHEME_RE, VARIANT_NAME_RE, parse_accelerator

    d = r.mapping(item, where, _VARIANT_FIELDS, ("name", "minMemory"))
    if (d.get("path") is None) == (d.get("ref") is None):
        raise r.fail(where, "give exactly one of path (files on the hub) and ref (a ModelPack artifact or KitOps "
                            "ModelKit in a registry, HOST/REPO:TAG or HOST/REPO@sha256:...)")
    name = r.string(d, "name", where)
    if not VARIANT_NAME_RE.match(name):
        raise r.fail(f"{where}.name", f"{name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    try:
        memory = parse_size(str(d["minMemory"]), what="is")
    except UsageError as exc:
        raise r.fail(f"{where}.minMemory", str(exc)[3:]) from None
    try:
        accelerator = parse_accelerator(str(d.get("accelerator", "none")), what="is")
    except UsageError as exc:
        raise r.fail(f"{where}.accelerator", str(exc)[3:]) from None
    schemes: dict[str, str | None] = {}
    for key in ("precision", "quantization"):
        value = d.get(key)
        if value is not None and (not isinstance(value, str) or not SCHEME_RE.match(value)):
            raise r.fail(f"{where}.{key}", f"{value!r} must be a word such as fp16, int8 or q4_k_m")
        schemes[key] = value.lower() if isinstance(value, str) else None
    quality = d.get("quality") or {}
    if not isinstance(quality, dict) or len(quality) > MAX_FIGURES:
        raise r.fail(f"{where}.quality", f"must be a mapping of benchmark: figure (at most {MAX_FIGURES})")
    figures: list[tuple[str, str]] = []
    for bench, figure in quality.items():
        text = str(figure) if isinstance(figure, (int, float, str)) and not isinstance(figure, bool) else ""
        if not isinstance(bench, str) or not VARIANT_NAME_RE.match(bench) or not FIGURE_RE.match(text):
            raise r.fail(f"{where}.quality", f"{bench!r}: {figure!r} must be a benchmark name and a decimal figure")
        figures.append((bench, text))
    return VariantItem(name=name, path=r.path(d, "path", where, hf=True) if d.get("path") is not None else None,
                       ref=r.string(d, "ref", where).strip() if d.get("ref") is not None else None,
                       min_memory=memory, accelerator=accelerator, precision=schemes["precision"],
                       quantization=schemes["quantization"], quality=tuple(sorted(figures)))


def load_spec(path: Path) -> Spec:
    """Read and parse the spec file at ``path``."""
    path = Path(_abspath(path))
    data = read_bounded(path, MAX_SPEC_BYTES, "spec file", place="source")  # regular files only: a FIFO never hangs export
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{path}: the spec is not UTF-8 text") from None
    return parse_spec(text, path)
