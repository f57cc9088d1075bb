"""Hugging Face hub cache folders as model sources, read offline.

The hub cache (``huggingface_hub``; ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``) stores a repository as::

    models--ORG--NAME/
        blobs/<sha>              the file contents, once each
        refs/main                the commit a branch or tag names (text)
        snapshots/<commit>/...   the repository's files, as symbolic links into ../../blobs/

A snapshot folder is exported as the model's plain files: each link is resolved, and only
when it stays inside that repository's cache folder (``models--ORG--NAME``); a link that points
anywhere else is refused (it would carry an arbitrary hub file). Source of the layout:
huggingface_hub "Manage huggingface_hub cache-system" (docs/spec.md, *Models*).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from manifests.errors import SpecError

HF_SCHEME = "hf://"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
_REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}\Z")


def hub_cache(env: dict[str, str] | None = None) -> Path:
    """The local hub cache folder, as huggingface_hub finds it.

    Args:
        env: the environment (default ``os.environ``): ``HF_HUB_CACHE``, then ``HF_HOME``
            (its ``hub`` subfolder), then ``~/.cache/huggingface/hub``.
    Returns:
        The folder (it may not exist).
    """
    env = dict(os.environ) if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def resolve_hf(ref: str, env: dict[str, str] | None = None) -> Path:
    """The snapshot folder that ``hf://ORG/NAME[@REVISION]`` names in the local cache.

    Args:
        ref: ``hf://ORG/NAME`` (revision ``main``) or ``hf://ORG/NAME@REV``, REV a branch or tag
            (looked up in ``refs/``) or a full commit hash.
        env: the environment (see :func:`hub_cache`).
    Returns:
        ``<cache>/models--ORG--NAME/snapshots/<commit>``, an existing folder.
    Raises:
        SpecError: the reference is malformed, or the cache lacks that repository or revision
            (the message says where it looked and how to fill the cache on a connected machine).
    """
    body = ref[len(HF_SCHEME):] if ref.startswith(HF_SCHEME) else ref
    repo, _, rev = body.partition("@")
    rev = rev or "main"
    if not _REPO_RE.match(repo) or not _REV_RE.match(rev) or ".." in rev.split("/"):
        raise SpecError(f"{ref!r} is not a Hugging Face reference like hf://org/name or hf://org/name@revision")
    cache = hub_cache(env)
    folder = cache / ("models--" + repo.replace("/", "--"))
    hint = (f"fill the cache first, e.g. `huggingface-cli download {repo}"
            f"{'' if rev == 'main' else ' --revision ' + rev}` (HF_HUB_CACHE={cache})")
    if not folder.is_dir():
        raise SpecError(f"{ref}: {repo} is not in the Hugging Face cache {cache}; {hint}")
    commit = rev
    ref_file = folder / "refs" / rev
    if ref_file.is_file() and not ref_file.is_symlink():
        commit = ref_file.read_text(encoding="ascii", errors="replace").strip()
    snapshot = folder / "snapshots" / commit
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit) or not snapshot.is_dir():
        raise SpecError(f"{ref}: revision {rev!r} of {repo} is not in the Hugging Face cache {cache}; {hint}")
    return snapshot


def link_boundary(root: Path) -> Path | None:
    """Where symbolic links in a model folder may lead, when ``root`` is (inside) a snapshot
    of a hub cache: that repository's cache folder ``models--ORG--NAME``; else None (links
    must stay inside the model folder itself).

    Args:
        root: the model folder (absolute).
    Returns:
        The real path of the repository's cache folder, or None.
    """
    parts = root.parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and re.match(r"^(models|datasets|spaces)--", parts[i - 1]) and i + 1 < len(parts):
            return Path(os.path.realpath(Path(*parts[:i])))
    return None
