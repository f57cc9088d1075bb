"""The self-install payload: ferry's own wheels, so ferry can be installed inside the air gap.

``ferry export --self-install`` makes, on the hub, with pip and the hub's package index:

* ``wheels/``: a wheel of ferry itself (``pip wheel --no-deps`` of the source ferry runs from)
  and binary wheels of its dependencies for the edge's Python and platform
  (``pip download --only-binary=:all: --python-version V --platform P``; default the hub's own);
* ``SHA256SUMS``: ``sha256sum``'s format, one line per wheel;
* ``install.sh``: checks every wheel against ``SHA256SUMS`` (``sha256sum -c``: coreutils, no
  Python package needed) and only then runs ``pip install --no-index --find-links wheels ferry``
  into a new virtual environment.

The payload travels twice: as a ``model`` artifact named ``ferry-self-install`` (ordinary
signed content: ``ferry verify`` checks it and ``ferry import`` keeps it in the edge state for
later reinstalls) and as plain files in ``OUT/self-install/``, because an edge without ferry
cannot read packs. The first install is anchored by the SHA256SUMS digest that the export
prints and that the operator carries with the change record (or reads with ``ferry verify`` on
any machine that has ferry): see docs/operator-guide.md, "Installing ferry inside the air gap".
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from manifests.errors import FerryError, PlaceError, UsageError

#: The artifact name the payload is carried under, and the medium folder of its plain copy.
ARTIFACT_NAME = "ferry-self-install"
MEDIUM_DIR = "self-install"
SUMS_NAME = "SHA256SUMS"
INSTALL_NAME = "install.sh"

_PYTHON = re.compile(r"^3\.[0-9]{1,2}\Z")
_PLATFORM = re.compile(r"^[a-z0-9_.]{1,64}\Z")

INSTALL_SH = """#!/bin/sh
# Install ferry inside the air gap from the wheels beside this script (made by ferry export
# --self-install). Usage: sh install.sh [VENV]   (default VENV: ./ferry-venv)
# 1. Every wheel is checked against SHA256SUMS; compare SHA256SUMS's own sha256 with the one the
#    hub's export printed (sha256sum SHA256SUMS) before trusting it.
# 2. pip installs ferry from these wheels only (--no-index): nothing is fetched.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-ferry-venv}
(cd "$here" && sha256sum --quiet --strict -c SHA256SUMS) || { echo "install.sh: a wheel does not match SHA256SUMS; not installing" >&2; exit 1; }
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-index --find-links "$here/wheels" ferry
echo "ferry installed in $venv: $venv/bin/ferry --version"
"""


@dataclass(frozen=True)
class Target:
    """The edge's Python (``3.11``) and pip platform tag (``manylinux2014_x86_64``); None: the hub's own."""

    python: str | None = None
    platform: str | None = None

    def check(self) -> Target:
        """Raises UsageError for a malformed version or platform tag (they go onto pip's command line)."""
        if self.python is not None and not _PYTHON.match(self.python):
            raise UsageError(f"--self-install-python {self.python!r}: give a version like 3.11")
        if self.platform is not None and not _PLATFORM.match(self.platform):
            raise UsageError(f"--self-install-platform {self.platform!r}: give a pip platform tag "
                             "like manylinux2014_x86_64")
        return self

    def describe(self) -> str:
        return (f"Python {self.python or '%d.%d' % sys.version_info[:2]}, "
                f"platform {self.platform or 'of this hub'}")


def requirements() -> list[str]:
    """ferry's runtime requirements (no extras), as installed: ``["typer>=0.26,<0.29", ...]``."""
    out = []
    for req in metadata.requires("ferry") or []:
        if re.search(r"\bextra\s*==", req):
            continue
        out.append(req)
    return out


def _source_root() -> Path:
    """The folder holding ferry's pyproject.toml (the checkout or unpacked source ferry runs from)."""
    import manifests

    root = Path(manifests.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise FerryError("--self-install: ferry runs from an installed wheel, not a source folder; "
                         "run the export from a ferry checkout (pip install -e .)")
    return root


def _pip(args: list[str], what: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or result.stderr.splitlines()
        raise FerryError(f"--self-install: {what} failed: {(lines[-1] if lines else 'pip exited with '+str(result.returncode)).strip()}")


def build(folder: Path, target: Target) -> list[Path]:
    """Make the payload in ``folder`` (emptied first): wheels, SHA256SUMS, install.sh.

    Args:
        folder: a staging folder on the hub (under the hub state).
        target: the edge's Python version and platform tag.

    Returns:
        The wheel files, sorted by name.

    Raises:
        FerryError: pip could not build ferry's wheel or download a dependency for the target
            (its last ERROR line is quoted).
        PlaceError: the staging folder cannot be written (place ``state``).
    """
    target.check()
    try:
        if folder.exists():
            shutil.rmtree(folder)
        wheels = folder / "wheels"
        wheels.mkdir(parents=True)
    except OSError as exc:
        raise PlaceError("state", str(folder), f"--self-install: cannot write {folder} ({exc.strerror or exc})") from None
    _pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(_source_root())], "building ferry's wheel")
    download = ["download", "--quiet", "--only-binary=:all:", "--dest", str(wheels)]
    if target.python:
        download += ["--python-version", target.python, "--implementation", "cp"]
    if target.platform:
        download += ["--platform", target.platform]
    _pip(download + requirements(), f"downloading the dependencies for {target.describe()}")
    files = sorted(p for p in wheels.iterdir() if p.suffix == ".whl")
    sums = "".join(f"{sha256_file(p)}  wheels/{p.name}\n" for p in files)
    (folder / SUMS_NAME).write_text(sums)
    (folder / INSTALL_NAME).write_text(INSTALL_SH)
    os.chmod(folder / INSTALL_NAME, 0o755)
    return files


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copy_to_medium(folder: Path, out: Path) -> Path:
    """Put the plain copy of the payload at ``OUT/self-install`` (replacing one left by a resumed run).

    Raises:
        PlaceError: place ``medium`` when ``out`` cannot be written.
    """
    dest = out / MEDIUM_DIR
    try:
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(folder, dest)
    except OSError as exc:
        raise PlaceError("medium", str(out), f"--out {out}: cannot write {dest} ({exc.strerror or exc})") from None
    return dest
