"""Site profiles at the hub: what each site can run and carry (docs/spec.md, *Site profiles*).

A profile is a small YAML or JSON document, written by hand (``ferry export --profile FILE``)
or kept in the hub state (``ferry profile add FILE --state HUB``, then ``ferry export --site
NAME``), one file per site under ``HUB/profiles/<name>.json``::

    apiVersion: ferry/v1
    kind: SiteProfile
    metadata:
      name: clinic-7          # the site's name (as ferry site set --name / receipts give it)
    spec:
      memory: 16GiB           # IEC or SI units (manifests.units)
      accelerator: none       # or the accelerator kind: gpu, nvidia-l4 ...
      link: 10GB/month        # optional: the byte budget of one bundle for this site

``ferry return import`` writes the same document from the resources a site recorded (``ferry
site set --memory/--accelerator/--link``, carried in its return bundle's ``status.json``), with
``metadata.source: return``, unless the site's profile was given by hand (``ferry profile add``
stores ``source: hand``): a hand-given profile wins until it is removed (docs/spec.md, *Site
profiles*).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from manifests.bundle import read_bounded
from manifests.durable import make_dirs, write_atomic
from manifests.errors import PlaceError, SpecError, UsageError
from manifests.model import NAME_RE
from manifests.units import parse_link, parse_size
from manifests.variants import Resources, parse_accelerator
from manifests.yamldoc import check_expanded

KIND = "SiteProfile"
PROFILES_DIR = "profiles"
MAX_PROFILE_BYTES = 64 * 1024
#: ``metadata.source`` of a kept profile: given by hand (``ferry profile add``) or written from a return bundle.
SOURCE_HAND = "hand"
SOURCE_RETURN = "return"
SOURCES = (SOURCE_HAND, SOURCE_RETURN)


def parse_profile(text: str | bytes, file: Path) -> tuple[str, Resources]:
    """A site profile document into (site name, resources) (``metadata.source`` is read by :func:`profile_source`).

    Args:
        text: the YAML or JSON text.
        file: where it came from (named in errors).
    Returns:
        (the site's name, its :class:`manifests.variants.Resources`).
    Raises:
        SpecError: not a ``ferry/v1`` ``SiteProfile``, an unknown field, a bad name, size,
            accelerator or link (one line naming the file and the field).
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{file}: not valid YAML or JSON: {str(exc).splitlines()[0]}") from None
    check_expanded(doc, str(file))
    if not isinstance(doc, dict) or doc.get("apiVersion") != "ferry/v1" or doc.get("kind") != KIND:
        raise SpecError(f"{file}: not a site profile (apiVersion: ferry/v1, kind: {KIND})")
    unknown = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if unknown:
        raise SpecError(f"{file}: {sorted(map(str, unknown))[0]} is not a known field")
    meta, spec = doc.get("metadata"), doc.get("spec")
    if not isinstance(meta, dict) or set(meta) - {"name", "source"} or not isinstance(meta.get("name"), str) \
            or not NAME_RE.match(meta["name"]):
        raise SpecError(f"{file}: metadata.name must be the site's name (letters, digits, '.', '_', '-'), "
                        "and metadata holds only name and source")
    if meta.get("source", SOURCE_HAND) not in SOURCES:
        raise SpecError(f"{file}: metadata.source must be {' or '.join(SOURCES)}")
    if not isinstance(spec, dict):
        raise SpecError(f"{file}: spec must be a mapping with memory, accelerator and optionally link")
    unknown = set(spec) - {"memory", "accelerator", "link"}
    if unknown:
        raise SpecError(f"{file}: spec.{sorted(map(str, unknown))[0]} is not a known field "
                        "(allowed: memory, accelerator, link)")
    for key in ("memory", "accelerator"):
        if spec.get(key) is None:
            raise SpecError(f"{file}: spec.{key} is required")
    try:
        memory = parse_size(str(spec["memory"]), what="spec.memory")
        accelerator = parse_accelerator(str(spec["accelerator"]), what="spec.accelerator")
        link = parse_link(str(spec["link"]), what="spec.link") if spec.get("link") is not None else None
    except UsageError as exc:
        raise SpecError(f"{file}: {exc}") from None
    return meta["name"], Resources(memory=memory, accelerator=accelerator, link=link)


def profile_document(name: str, res: Resources, source: str = SOURCE_HAND) -> dict[str, Any]:
    """The document :func:`parse_profile` reads, for ``name`` and ``res`` (sizes in bytes), kept from ``source``."""
    spec: dict[str, Any] = {"memory": str(res.memory), "accelerator": res.accelerator}
    if res.link is not None:
        spec["link"] = f"{res.link[0]}/{res.link[1]}"
    return {"apiVersion": "ferry/v1", "kind": KIND, "metadata": {"name": name, "source": source}, "spec": spec}


def _keep(state: Path, name: str, res: Resources, source: str) -> None:
    folder = Path(state) / PROFILES_DIR
    try:
        make_dirs(folder)
        write_atomic(folder / f"{name}.json", json.dumps(profile_document(name, res, source), sort_keys=True).encode())
    except OSError as exc:
        raise PlaceError("state", str(folder), f"hub state {folder}: cannot write ({exc.strerror or exc})") from None


def profile_source(state: Path, site: str) -> str | None:
    """Where the kept profile of ``site`` came from: ``hand``, ``return``, or None when none is kept.

    A kept file without ``metadata.source`` (written before sources were kept) counts as ``hand``.

    Raises:
        SpecError: the kept file does not parse.
    """
    path = Path(state) / PROFILES_DIR / f"{site}.json"
    if not NAME_RE.match(site) or not path.is_file():
        return None
    load_profile(path)  # refuses a file that is no profile
    meta = json.loads(read_bounded(path, MAX_PROFILE_BYTES, "site profile", place="state")).get("metadata", {})
    return str(meta.get("source", SOURCE_HAND))


def profile_from_return(state: Path, site: str, res: Resources) -> str:
    """Keep the profile a site's return bundle reported, unless one was given by hand.

    Args:
        state: the hub state folder. site: the site's name (the return bundle's channel).
        res: the resources its ``status.json`` carried (``siteIdentity.resources``; bytes).
    Returns:
        What happened, for the operator: ``"kept"`` (written or replaced), ``"hand"`` (a
        hand-given profile is kept and wins), ``"unrecorded"`` (the site recorded no memory or
        no accelerator, which a profile needs: nothing written).
    Raises:
        PlaceError: the hub state cannot be written. SpecError: the kept file does not parse.
    Source: docs/spec.md, *Site profiles* (issue #20 item 2).
    """
    if profile_source(state, site) == SOURCE_HAND:
        return "hand"
    if res.memory is None or res.accelerator is None:
        return "unrecorded"
    _keep(state, site, res, SOURCE_RETURN)
    return "kept"


def load_profile(path: Path) -> tuple[str, Resources]:
    """Read and parse the profile file at ``path`` (bounded, regular files only).

    Raises:
        PlaceError: it cannot be read. SpecError: see :func:`parse_profile`.
    """
    return parse_profile(read_bounded(path, MAX_PROFILE_BYTES, "site profile", place="source"), path)


def add_profile(state: Path, path: Path) -> tuple[str, Resources]:
    """Keep the profile at ``path`` in the hub state (replacing that site's earlier one), as given by hand.

    A hand-given profile wins over what the site's return bundles report (:func:`profile_from_return`).

    Returns:
        (site name, resources).
    Raises:
        SpecError: the profile is refused. PlaceError: the hub state cannot be written.
    """
    name, res = load_profile(path)
    _keep(state, name, res, SOURCE_HAND)
    return name, res


def stored_profile(state: Path, site: str) -> Resources:
    """The profile the hub state keeps for ``site``.

    Raises:
        UsageError: no profile for that site (naming the ones kept and how to add one).
        SpecError: the stored file was changed into something that does not parse.
    """
    folder = Path(state) / PROFILES_DIR
    if not NAME_RE.match(site):
        raise UsageError(f"--site {site!r} is not a site name")
    path = folder / f"{site}.json"
    if not path.is_file():
        raise UsageError(f"--site {site}: the hub state {state} keeps no profile for it (kept: "
                         f"{', '.join(p[0] for p in list_profiles(state)) or 'none'}); add one with "
                         "`ferry profile add FILE --state`, or give --profile FILE")
    return load_profile(path)[1]


def list_profiles(state: Path) -> list[tuple[str, Resources]]:
    """Every profile the hub state keeps, sorted by site name."""
    folder = Path(state) / PROFILES_DIR
    if not folder.is_dir():
        return []
    return sorted((load_profile(folder / n) for n in os.listdir(folder) if n.endswith(".json")), key=lambda p: p[0])
