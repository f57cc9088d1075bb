"""Model source: a file or a folder of files on the hub, as one model artifact.

Only regular files are carried (the bundle format has no links). A symlink whose target
stays inside the model folder is carried as the file it points to; one that leaves the
folder is refused, because it would smuggle an arbitrary hub file onto the medium. A
Hugging Face cache snapshot (``models--ORG--NAME/snapshots/<rev>/``, files linked into
``../../blobs/``) may link anywhere inside that repository's cache folder and nowhere else
(:mod:`bundler.sources.hfcache`). Special files (FIFOs, sockets, devices) are refused too.
Every path is checked with the bundle's path rules before anything is written.

What a file carries is its bytes: hard links inside one model become separate files at the
edge (the bundle stores their shared chunks once), executable bits are not kept (the edge
writes model files 0644), and a sparse file's holes travel as zero chunks, stored once and
written back as holes (docs/spec.md, *Models*).
"""

from __future__ import annotations

import os
import stat
from functools import partial
from pathlib import Path
from typing import BinaryIO

from manifests.errors import FormatError, PlaceError
from manifests.paths import check_path, check_tree

from . import SourceArtifact, SourceFile
from .hfcache import link_boundary


def _opener(path: Path) -> BinaryIO:
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def _regular(path: Path, shown: str) -> os.stat_result:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise PlaceError("source", str(shown), f"{shown}: not a regular file (FIFOs, sockets and devices cannot be bundled)")
    return st


def _inside(root: Path, target: Path) -> bool:
    return os.path.commonpath([root, target]) == str(root)


def model_files(root: Path, *, what: str = "model") -> list[SourceFile]:
    """The files of a model at ``root`` (a file or a folder), sorted by bundle path."""
    root = Path(os.path.abspath(root))
    if root.is_symlink() and not root.exists():
        raise PlaceError("source", str(root), f"{what} path {root}: broken symlink")
    if root.is_file():
        st = _regular(root, str(root))
        name = check_path(root.name, where=f"{what} file name")
        return [SourceFile(size=st.st_size, open=partial(_opener, root), path=name, local_path=root)]
    if not root.is_dir():
        raise PlaceError("source", str(root), f"{what} path {root}: not a regular file or folder")
    real_root = Path(os.path.realpath(root))
    cache_repo = link_boundary(root)
    boundary = cache_repo or real_root
    where_links = f"the Hugging Face cache folder {cache_repo}" if cache_repo else f"the {what} folder"
    files: list[SourceFile] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for d in list(dirs):
            full = Path(folder) / d
            if full.is_symlink():
                target = Path(os.path.realpath(full))
                if not _inside(boundary, target):
                    raise PlaceError("source", str(full), f"{full}: symlink leaves {where_links} (points to {target})")
                raise PlaceError("source", str(full), f"{full}: symlinked folders are not bundled; copy the folder instead")
        for n in sorted(names):
            full = Path(folder) / n
            rel = full.relative_to(root).as_posix()
            try:
                check_path(rel, where=f"{what} file")
            except FormatError as exc:
                raise PlaceError("source", str(full), f"{full}: {exc}") from None
            local = full
            if full.is_symlink():
                target = Path(os.path.realpath(full))
                if not _inside(boundary, target):
                    raise PlaceError("source", str(full), f"{full}: symlink leaves {where_links} (points to {target})")
                if not target.exists():
                    raise PlaceError("source", str(full), f"{full}: broken symlink")
                local = target
            st = _regular(local, str(full))
            files.append(SourceFile(size=st.st_size, open=partial(_opener, local), path=rel, local_path=local))
    if not files:
        raise PlaceError("source", str(root), f"{what} folder {root} holds no files")
    files.sort(key=lambda f: f.path or "")
    try:
        check_tree((f.path for f in files if f.path), where=f"{what} {root}")
    except FormatError as exc:
        raise PlaceError("source", str(root), str(exc)) from None
    return files


def model_source(name: str, version: str, path: Path) -> SourceArtifact:
    """One model artifact from a file or folder."""
    return SourceArtifact(kind="model", name=name, version=version, files=model_files(path))
