"""Publish a model version folder as OCI artifacts: into an OCI layout, or into a registry.

Both forms of :mod:`manifests.modelpack` go to the repository ``models/<name>``:

- ``models/<name>:<version>`` names the **ModelPack artifact** (the spec's form: model-aware
  tools read its config and per-file layers, and each layer is the file itself);
- ``models/<name>:<version>-modelcar`` names the **modelcar image** (for runtimes that mount
  only images: KServe modelcars, Kubernetes image volumes).

Why the plain tag names the ModelPack form: it is the form the CNCF spec defines for models
and the one that costs no extra bytes (its layers *are* the model files); the modelcar is a
compatibility form found by its ``-modelcar`` tag (and workloads pin either by digest).

In a layout, raw layers are hard links to the model store's files where the file system
allows (same device, links permitted), copies otherwise; so the ModelPack form stores no
model byte twice. The modelcar's tar layer is necessarily a second copy of the bytes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING


from manifests.errors import FerryError, FormatError, PlaceError, VerificationError
from manifests.model import REPOSITORY_RE, TAG_RE, Artifact, utc_now
from manifests.budget import MIN_MEMORY_BUDGET, import_sizes
from manifests.modelpack import (MODELCAR_TAG_SUFFIX, TAR_END, ModelFacts, ModelFile,
                                 model_format, modelcar_config, modelcar_entries, modelcar_layer_size,
                                 modelcar_manifest, modelpack_config, modelpack_manifest,
                                 safetensors_facts, safetensors_header_length, tar_header, tar_padding)
from manifests.oci import OCI_MANIFEST
from manifests.variants import Variant

from ..fsroot import FsRoot
from ..state import PublishedRow
from .images import Layout

if TYPE_CHECKING:
    from transport.registry import RegistryClient

_READ = 1 << 20


@dataclass(frozen=True)
class Published:
    """Where a model version went: ``repository`` (``models/<name>``), the ModelPack
    manifest's ``tag`` and ``digest``, the modelcar's ``modelcar_tag`` and ``modelcar_digest``
    (None when not published), and how many raw layers were hard-linked (layouts only)."""

    repository: str
    tag: str
    digest: str
    modelcar_tag: str | None
    modelcar_digest: str | None
    linked: int = 0


def repository_for(name: str) -> str:
    """``models/<name>`` (lowercased, as repository names must be).

    Raises:
        FormatError: the name cannot be a repository path component.
    """
    repo = f"models/{name.lower()}"
    if not REPOSITORY_RE.match(repo) or len(repo) > 255:
        raise FormatError(f"model {name!r} cannot be published: {repo!r} is not a valid repository name")
    return repo


def tag_for(version: str) -> str:
    """The tag of a version (``+`` of semver build metadata becomes ``_``, as tags forbid it).

    Raises:
        FormatError: the version cannot be a tag.
    """
    tag = version.replace("+", "_")
    if not TAG_RE.match(tag) or len(tag) + len(MODELCAR_TAG_SUFFIX) > 128:
        raise FormatError(f"version {version!r} cannot be an OCI tag")
    return tag


# --------------------------------------------------------------------------- reading the folder


def scan_model(folder: Path) -> tuple[list[ModelFile], ModelFacts]:
    """The files of a model version folder (sha256 each) and the facts they reveal.

    Args:
        folder: the model version folder (e.g. ``EDGE/models/<name>/<version>``).
    Returns:
        (files sorted by path, :class:`ModelFacts` with format, and for safetensors files the
        parameter count and majority precision).
    Raises:
        PlaceError: the folder is unreadable, holds a symbolic link or a special file.
    """
    files: list[ModelFile] = []
    params = 0
    by_precision: dict[str, int] = {}
    try:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for fname in sorted(filenames) + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                path = Path(dirpath) / fname
                rel = path.relative_to(folder).as_posix()
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode):
                    raise PlaceError("state", str(path), f"{path}: not a regular file (links are not published)")
                sha = hashlib.sha256()
                with open(path, "rb") as f:
                    head = f.read(_READ)
                    sha.update(head)
                    while data := f.read(_READ):
                        sha.update(data)
                    if rel.endswith(".safetensors"):
                        count, precision = _safetensors(head, path)
                        params += count
                        if precision:
                            by_precision[precision] = by_precision.get(precision, 0) + count
                files.append(ModelFile(rel, st.st_size, "sha256:" + sha.hexdigest()))
    except OSError as exc:
        raise PlaceError("state", str(folder), f"{folder}: cannot read the model ({exc.strerror or exc})") from None
    if not files:
        raise PlaceError("state", str(folder), f"{folder}: no model files to publish")
    precision = max(by_precision.items(), key=lambda kv: kv[1])[0] if by_precision else None
    facts = ModelFacts(format=model_format([f.path for f in files]), precision=precision,
                       parameters=params or None)
    return sorted(files, key=lambda f: f.path), facts


#: Largest safetensors header parsed for the parameter count and precision: the importer's
#: header share at the lowest memory budget (:func:`manifests.budget.import_sizes`), so every
#: ``--memory-budget`` holds. A larger header (the format allows 100 MB, about 1 GB parsed)
#: tells nothing: the published config leaves both out.
FACTS_HEADER_MAX = import_sizes(MIN_MEMORY_BUDGET).max_header


def _safetensors(head: bytes, path: Path) -> tuple[int, str | None]:
    """Facts from one safetensors file; an unreadable header, or one over
    :data:`FACTS_HEADER_MAX`, tells nothing (not an error: publishing does not depend on it)."""
    try:
        length = safetensors_header_length(head)
        if length > FACTS_HEADER_MAX:
            return 0, None
        header = head[8:8 + length]
        if len(header) < length:
            with open(path, "rb") as g:
                g.seek(8)
                header = g.read(length)
        return safetensors_facts(header)
    except FormatError:
        return 0, None


def modelcar_chunks(folder: Path, files: list[ModelFile]) -> Iterator[bytes]:
    """The modelcar layer's bytes (an uncompressed tar of the files under ``models/``),
    streamed; raises VerificationError if a file changed size while read."""
    for name, f in modelcar_entries(files):
        yield tar_header(name, f.size if f else 0, folder=f is None)
        if f is None:
            continue
        done = 0
        with open(folder / f.path, "rb") as src:
            while data := src.read(_READ):
                done += len(data)
                yield data
        if done != f.size:
            raise VerificationError(f"{folder / f.path}: changed while being published")
        yield tar_padding(f.size)
    yield TAR_END


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while data := f.read(_READ):
            yield data


# --------------------------------------------------------------------------- publishing


def publish_model(folder: Path, name: str, version: str, *, layout: Path | None = None,
                  client: RegistryClient | None = None, modelcar: bool = True,
                  architecture: str = "amd64", variant: Variant | None = None) -> Published:
    """Publish one model version folder as a ModelPack artifact (and a modelcar image).

    Args:
        folder: the model version folder.
        name, version: the model's ferry name and version.
        layout: an OCI layout folder (``EDGE/oci``) to publish into, or
        client: a registry client (:class:`transport.registry.RegistryClient`); exactly one.
        modelcar: also publish the modelcar image under ``<version>-modelcar``.
        architecture: the modelcar config's architecture (the image holds no binaries).
        variant: the model variant installed (the bundle's record, :mod:`manifests.variants`):
            its precision and quantization fill the config's fields (the hub checked them
            against the files); None: what :func:`scan_model` reads.
    Returns:
        :class:`Published`.
    Raises:
        FerryError: neither or both targets; FormatError: name or version unusable;
        PlaceError: the folder is unreadable; RegistryError: the registry refused.
    """
    if (layout is None) == (client is None):
        raise FerryError("publish a model into exactly one of an OCI layout or a registry")
    repo, tag = repository_for(name), tag_for(version)
    files, facts = scan_model(folder)
    if variant is not None:
        facts = replace(facts, precision=variant.precision or facts.precision,
                        quantization=variant.quantization or facts.quantization)
    config = modelpack_config(name, version, files, facts)
    config_digest = _sha(config)
    manifest = modelpack_manifest(config, config_digest, files)
    car_tag = tag + MODELCAR_TAG_SUFFIX if modelcar else None
    if client is not None:
        car = _modelcar(folder, files, name, version, architecture, _hash_chunks(modelcar_chunks(folder, files))) \
            if modelcar else None
        for f in files:
            if not client.has_blob(repo, f.digest):
                client.upload_blob(repo, f.digest, f.size, _file_chunks(folder / f.path))
        _put_small(client, repo, config)
        digest = client.put_manifest(repo, tag, manifest, OCI_MANIFEST)
        car_digest = None
        if car:
            car_config, car_manifest, layer_digest, size = car
            if not client.has_blob(repo, layer_digest):
                client.upload_blob(repo, layer_digest, size, modelcar_chunks(folder, files))
            _put_small(client, repo, car_config)
            car_digest = client.put_manifest(repo, car_tag or "", car_manifest, OCI_MANIFEST)
        return Published(repo, tag, digest, car_tag, car_digest)
    assert layout is not None
    with FsRoot.open(layout, create=True) as fs:
        return _publish_into(Layout(fs, ""), folder, files, name, version, architecture, repo, tag, car_tag,
                             config, manifest, modelcar)


def _publish_into(target: Layout, folder: Path, files: list[ModelFile], name: str, version: str,
                  architecture: str, repo: str, tag: str, car_tag: str | None, config: bytes, manifest: bytes,
                  modelcar: bool) -> Published:
    """The layout half of :func:`publish_model`: every write through the layout's fd-rooted writer."""
    target.ensure()
    linked = 0
    for f in files:
        linked += _place_file(target, folder / f.path, f)
    _place_bytes(target, config)
    digest = _place_bytes(target, manifest)
    car_digest = None
    car = _modelcar(folder, files, name, version, architecture, _place_stream(target, None, modelcar_chunks(
        folder, files))) if modelcar else None  # one pass: written while hashed, named by its digest
    if car:
        car_config, car_manifest, layer_digest, size = car
        _place_bytes(target, car_config)
        car_digest = _place_bytes(target, car_manifest)
    target.tag(f"{repo}:{tag}", _Top(OCI_MANIFEST, digest, len(manifest)))  # type: ignore[arg-type]
    if car and car_digest:
        target.tag(f"{repo}:{car_tag}", _Top(OCI_MANIFEST, car_digest, len(car[1])))  # type: ignore[arg-type]
    return Published(repo, tag, digest, car_tag, car_digest, linked)


def _modelcar(folder: Path, files: list[ModelFile], name: str, version: str, architecture: str,
              layer_digest: str) -> tuple[bytes, bytes, str, int]:
    """(config, manifest, layer digest, layer size) of the modelcar whose layer hashed to ``layer_digest``."""
    size = modelcar_layer_size(files)
    config = modelcar_config(layer_digest, name, version, architecture)
    return config, modelcar_manifest(config, _sha(config), layer_digest, size), layer_digest, size


def _hash_chunks(chunks: Iterator[bytes]) -> str:
    sha = hashlib.sha256()
    for data in chunks:
        sha.update(data)
    return "sha256:" + sha.hexdigest()


@dataclass(frozen=True)
class _Top:
    media_type: str
    digest: str
    size: int


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put_small(client: RegistryClient, repo: str, data: bytes) -> None:
    digest = _sha(data)
    if not client.has_blob(repo, digest):
        client.upload_blob(repo, digest, len(data), iter([data]))


def _present(layout: Layout, digest: str, size: int) -> bool:
    return layout._size(digest) == size


def _place_bytes(layout: Layout, data: bytes) -> str:
    digest = _sha(data)
    if not _present(layout, digest, len(data)):
        with layout._fs().replacing(layout.path(digest)) as f:
            f.write(data)
    return digest


def _place_file(layout: Layout, source: Path, f: ModelFile) -> int:
    """Hard-link ``source`` as blob ``f.digest`` (1), or copy it, checking its sha256 (0).
    The link is made relative to the blobs folder's descriptor (no path is followed)."""
    fs, name = layout._fs(), f.digest.split(":", 1)[1]
    if _present(layout, f.digest, f.size):
        st, src = fs.lstat(layout.path(f.digest)), source.stat()
        return 1 if st is not None and (st.st_dev, st.st_ino) == (src.st_dev, src.st_ino) else 0
    tmp = f".link-{os.getpid()}-{name}"
    with fs.folder(layout.blobs) as dfd:
        try:
            os.link(source, tmp, dst_dir_fd=dfd, follow_symlinks=False)
        except OSError:  # another device, links not allowed: copy, verified
            linked = False
        else:
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            os.fsync(dfd)
            linked = True
    if not linked:
        _place_stream(layout, f.digest, _file_chunks(source))
    return 1 if linked else 0


def _place_stream(layout: Layout, digest: str | None, chunks: Iterator[bytes]) -> str:
    """Write a blob from ``chunks`` through the layout's :meth:`FsRoot.replacing`; with
    ``digest`` given, it becomes visible only if it hashes to that, else it is written under a
    staging name and renamed to the digest it hashed to. Returns the digest.

    Raises:
        VerificationError: the bytes do not hash to ``digest``.
    """
    fs, sha = layout._fs(), hashlib.sha256()
    rel = layout.path(digest) if digest is not None else f"{layout.blobs}/publishing-{os.getpid()}-{os.urandom(6).hex()}"
    with fs.replacing(rel) as out:
        for data in chunks:
            sha.update(data)
            out.write(data)
        got = "sha256:" + sha.hexdigest()
        if digest is not None and got != digest:
            raise VerificationError(f"blob {digest}: the model's bytes changed while being published")
    if digest is None:
        fs.rename(rel, layout.path(got))
    return got


# --------------------------------------------------------------------------- free space


#: Bound on the small blobs a publish adds besides the layers (two configs, two manifests):
#: this much, plus twice (path + 512) bytes per file (a layer descriptor and a diff id).
SMALL_BLOBS_BYTES = 8192


def layout_bytes(state_root: Path, artifact: Artifact) -> int:
    """Bytes publishing ``artifact`` into ``EDGE/oci`` adds to the disk (the free-space plan):
    the modelcar's tar layer (:func:`manifests.modelpack.modelcar_layer_size`, exact), the
    small blobs, and the raw layers only when they cannot be hard links (``EDGE/oci`` on
    another file system than ``EDGE/models``); zero extra for them otherwise."""
    from importer.state import MODELS_DIR, OCI_DIR

    files = [ModelFile(e.path or "", e.size, "") for e in artifact.entries]
    total = sum(f.size for f in files)
    try:
        car = modelcar_layer_size(files)
    except FerryError:
        car = total + 1024 * (len(files) + 2)  # the publish refuses such paths anyway
    devices = set()
    for sub in (OCI_DIR, MODELS_DIR):
        try:
            devices.add(os.stat(state_root / sub).st_dev)
        except OSError:
            pass
    small = SMALL_BLOBS_BYTES + 2 * sum(len(f.path.encode()) + 512 for f in files)
    return car + small + (total if len(devices) > 1 else 0)


# --------------------------------------------------------------------------- pinning workloads


def pinned_model_ref(row: PublishedRow, *, modelcar: bool = True) -> str:
    """The digest-pinned reference of a published model version: the modelcar image (what
    image volumes, KServe modelcars and containers mount) unless ``modelcar`` is False or none
    was published, else the ModelPack manifest. ``HOST/models/<name>@sha256:...`` in a
    registry; ``models/<name>@sha256:...`` (the hub-side name, pinned) in ``EDGE/oci``."""
    digest = row.modelcar_digest if modelcar and row.modelcar_digest else row.digest
    return f"{row.place}/{row.repository}@{digest}" if row.place else f"{row.repository}@{digest}"


def model_refs(rows: list[PublishedRow]) -> dict[str, str]:
    """What a workload may write -> the pinned reference, for every published model version in
    ``rows`` (one place): ``models/<name>:<tag>`` and ``models/<name>:<tag>-modelcar`` pin to the
    modelcar (:func:`pinned_model_ref`); ``models/<name>@<digest>`` of either form pins to
    itself at the site. :func:`importer.apply.kube.prepare` applies these by the images' rule."""
    refs: dict[str, str] = {}
    for row in rows:
        pinned = pinned_model_ref(row)
        refs[f"{row.repository}:{row.tag}"] = pinned
        if row.modelcar_tag:
            refs[f"{row.repository}:{row.modelcar_tag}"] = pinned
        refs[f"{row.repository}@{row.digest}"] = pinned_model_ref(row, modelcar=False)
        if row.modelcar_digest:
            refs[f"{row.repository}@{row.modelcar_digest}"] = pinned
    return refs


def where_published(row: PublishedRow) -> str:
    """One line for status and the audit trail: ``models/m:1.0 sha256:… and models/m:1.0-modelcar
    sha256:… in HOST`` (or ``in EDGE/oci``)."""
    forms = [f"{row.repository}:{row.tag} {row.digest}"]
    if row.modelcar_tag and row.modelcar_digest:
        forms.append(f"{row.repository}:{row.modelcar_tag} {row.modelcar_digest}")
    return f"{' and '.join(forms)} in {row.place or 'EDGE/oci'}"


def published_row(published: Published, name: str, version: str, place: str) -> PublishedRow:
    """The ledger row (:func:`importer.state.record_published`) for one publish."""
    return PublishedRow(name=name, version=version, place=place, repository=published.repository,
                        tag=published.tag, digest=published.digest, modelcar_tag=published.modelcar_tag,
                        modelcar_digest=published.modelcar_digest, at=utc_now())


# --------------------------------------------------------------------------- the import's hook


def publish_installed(state_root: Path, name: str, version: str, *, registry: str | None,
                      insecure_registries: frozenset[str] = frozenset(),
                      variant: Variant | None = None) -> tuple[Published, str]:
    """Publish an installed model version (``EDGE/models/<name>/<version>``) where the import
    puts images: the site registry when ``registry`` is given, else the layout ``EDGE/oci``.

    Returns:
        (:class:`Published`, the ModelPack form's pinned reference: ``HOST/models/<name>@<digest>``
        in a registry, ``models/<name>@<digest>`` — the hub-side name, pinned — in the layout).
    Raises:
        FerryError subclasses as :func:`publish_model`.
    """
    from importer.state import MODELS_DIR, OCI_DIR

    folder = state_root / MODELS_DIR / name / version
    if registry:
        from .images import ImageTarget, client_for

        client = client_for(ImageTarget(registry, None, insecure_registries))
        published = publish_model(folder, name, version, client=client, variant=variant)
        return published, f"{registry}/{published.repository}@{published.digest}"
    published = publish_model(folder, name, version, layout=state_root / OCI_DIR, variant=variant)
    return published, f"{published.repository}@{published.digest}"


# --------------------------------------------------------------------------- pruning


def unpublish(state_root: Path, doomed: list[PublishedRow], kept: list[PublishedRow], *, registry: str | None,
              insecure_registries: frozenset[str] = frozenset()) -> tuple[list[PublishedRow], list[str]]:
    """Remove the published artifacts of pruned model versions (``--keep N``, issue #14 item 5).

    Args:
        state_root: EDGE.
        doomed: the ledger rows (:meth:`importer.state.EdgeState.published`) of the versions pruned.
        kept: every other row: a digest one of them names is never deleted.
        registry: this import's registry (``HOST[:PORT]``), or None.
        insecure_registries: as for :func:`importer.apply.images.client_for`.

    In ``EDGE/oci`` the two tags go from ``index.json`` and then every blob only they reached
    (:meth:`importer.apply.images.Layout.untag`: a raw layer still named by a kept version's
    ModelPack manifest stays). In the registry the two manifests are deleted by digest (their
    tags with them; the registry's own garbage collection frees the blobs). A row at another
    registry, or at a registry that does not allow deletes, stays published, and a note says so.

    Returns:
        (the rows whose artifacts are gone, to drop from the ledger; notes, one per row left).
    Raises:
        Nothing: a failure becomes a note (pruning a model's files never waits on a registry).
    """
    gone: list[PublishedRow] = []
    notes: list[str] = []
    in_layout = [r for r in doomed if not r.place]
    if in_layout:
        from importer.state import OCI_DIR

        names = {f"{r.repository}:{t}" for r in in_layout for t in (r.tag, r.modelcar_tag) if t}
        try:
            if os.path.isdir(state_root / OCI_DIR):
                with FsRoot.open(state_root / OCI_DIR) as fs:
                    Layout(fs, "").untag(names)
            gone.extend(in_layout)
        except (FerryError, OSError) as exc:
            notes.append(f"{', '.join(sorted(names))} stay in {state_root / OCI_DIR}: {exc}")
    at_registry = [r for r in doomed if r.place and r.place == registry]
    if at_registry:
        from .images import ImageTarget, client_for

        held = {(r.repository, d) for r in kept if r.place == registry for d in (r.digest, r.modelcar_digest) if d}
        client = client_for(ImageTarget(registry, None, insecure_registries))
        for r in at_registry:
            try:
                for d in (r.modelcar_digest, r.digest):
                    if d and (r.repository, d) not in held:
                        client.delete_manifest(r.repository, d)
                gone.append(r)
            except FerryError as exc:
                notes.append(f"{r.repository}:{r.tag} stays published in {r.place}: {exc}")
    for r in doomed:
        if r.place and r.place != registry:
            notes.append(f"{r.repository}:{r.tag} stays published in {r.place} (not this import's registry)")
    return gone, notes
