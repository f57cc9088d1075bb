"""Kubernetes / KubeStellar manifest sets on the hub: walk the operator's files and read them.

A manifest set is a YAML file or a folder of ``*.yaml``/``*.yml`` files. This module only
finds and reads the operator's files (links must stay inside the folder, sizes are bounded
before reading); every document is parsed and checked by :mod:`manifests.kube`, the same
functions the edge uses. Files are carried byte for byte.
"""

from __future__ import annotations

import functools
import io
import os
import stat
from pathlib import Path

from manifests.errors import LimitError, PlaceError, SpecError
from manifests.kube import YAML_SUFFIXES, KubeObject, check_unique, parse_documents, workload_images
from manifests.limits import MAX_KUBE_FILE_BYTES, MAX_KUBE_SET_BYTES
from manifests.paths import check_path, check_tree

from . import SourceArtifact, SourceFile


# --------------------------------------------------------------------------- the source


def _yaml_files(root: Path) -> list[tuple[str, Path]]:
    """(relative path, file) for every YAML file below ``root``, sorted; links must stay inside."""
    real_root = root.resolve()
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in list(dirnames):
            if (here / name).is_symlink():
                target = (here / name).resolve()
                if not target.is_relative_to(real_root):
                    raise PlaceError("source", str(here / name), f"{here / name}: a link that leaves the manifest folder")
                dirnames.remove(name)  # a link within the folder: its files are read where they are
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(YAML_SUFFIXES):
                continue
            full = here / name
            if full.is_symlink() and not full.resolve().is_relative_to(real_root):
                raise PlaceError("source", str(full), f"{full}: a link that leaves the manifest folder")
            found.append((full.relative_to(root).as_posix(), full))
    return sorted(found)


def _read(path: Path, label: str) -> bytes:
    """A regular file's bytes, refused before reading when over the limit (or a FIFO, device)."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise PlaceError("source", str(label), f"{label}: not a regular file")
        if st.st_size > MAX_KUBE_FILE_BYTES:
            raise LimitError(f"{label}: {st.st_size} bytes, over the limit of {MAX_KUBE_FILE_BYTES} for one manifest file")
        with open(path, "rb") as f:
            return f.read(MAX_KUBE_FILE_BYTES + 1)  # parse_documents refuses it if it grew meanwhile
    except OSError as err:
        raise PlaceError("source", str(label), f"{label}: cannot read ({err.strerror})") from None


def manifests_source(name: str, version: str, path: Path) -> SourceArtifact:
    """A manifest set from a YAML file or a folder of them, every document checked.

    The files are carried exactly as read (the bytes checked are the bytes bundled);
    ``images`` lists every image the set's workloads name, sorted and unique.
    """
    path = Path(path)
    if not path.exists():
        raise PlaceError("source", str(path), f"manifest set {name!r}: {path} does not exist")
    if path.is_dir():
        files = _yaml_files(path)
        if not files:
            raise PlaceError("source", str(path), f"manifest set {name!r}: no *.yaml or *.yml files in {path}")
    elif path.is_file():
        files = [(path.name, path)]
    else:
        raise PlaceError("source", str(path), f"manifest set {name!r}: {path} is not a file or folder")
    for rel, _ in files:
        check_path(rel, where=f"manifest set {name!r}: file")
    check_tree((rel for rel, _ in files), where=f"manifest set {name!r}")

    total = 0
    sources: list[SourceFile] = []
    objects: list[KubeObject] = []
    for rel, full in files:
        label = str(full)
        data = _read(full, label)
        total += len(data)
        if total > MAX_KUBE_SET_BYTES:
            raise LimitError(f"manifest set {name!r}: more than {MAX_KUBE_SET_BYTES} bytes of YAML")
        objects.extend(parse_documents(data, rel, label))
        sources.append(SourceFile(size=len(data), open=functools.partial(io.BytesIO, data), path=rel))
    if not objects:
        raise SpecError(f"manifest set {name!r}: {path} holds no Kubernetes objects")
    check_unique(objects, f"manifest set {name!r}")
    images = sorted({ref for obj in objects for ref in workload_images(obj)})
    return SourceArtifact(kind="manifests", name=name, version=version, files=sources, images=tuple(images))
