"""Test-only helpers for attacking the edge: a fingerprint of everything installed, and the
shape every refusal must have.

``snapshot(EDGE)`` hashes every file, folder and link under the edge state except the
bookkeeping that a refusal is *supposed* to change (the audit trail records the refusal; the
ledger database records that a manifest was seen), plus the ledger rows that describe what is
installed (installed artifacts, kept versions, channel sequences). Two equal snapshots mean
nothing installed changed.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

from tests.support.common import assert_clean_failure

#: Top-level names under EDGE that a refused import may legitimately change.
BOOKKEEPING = {"audit", "lock", "state.db", "state.db-wal", "state.db-shm", "state.db-journal"}
#: Ledger tables describing what is installed; compared row by row.
LEDGER_TABLES = ("installed", "versions", "channels")


def snapshot(edge: Path) -> dict[str, str]:
    """``relative path -> fingerprint`` of everything installed under ``edge`` (links not followed)."""
    out: dict[str, str] = {}
    if not edge.exists():
        return out
    for root, dirs, files in os.walk(edge, followlinks=False):
        rel_root = Path(root).relative_to(edge)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in BOOKKEEPING]
            files = [f for f in files if f not in BOOKKEEPING]
        for name in sorted(dirs) + sorted(files):
            p = Path(root) / name
            rel = str(rel_root / name)
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            else:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                out[rel] = f"file:{oct(st.st_mode & 0o777)}:{h.hexdigest()}"
    db = edge / "state.db"
    if db.exists():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for table in LEDGER_TABLES:
                try:
                    rows = sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)  # noqa: S608
                except sqlite3.OperationalError:
                    continue
                for row in rows:
                    # the time a row was written is not part of what is installed
                    out[f"ledger:{table}:{row[:3]!r}"] = repr(row)
        finally:
            con.close()
    return out


def tree(path: Path) -> dict[str, str]:
    """Fingerprint of any folder (an outside target a planted link points at)."""
    return snapshot(path) if path.exists() else {}


def assert_refused(result: subprocess.CompletedProcess[str], *, contains: str | None = None) -> None:
    """A refusal as the team's bar demands: non-zero exit (1 or 2), one ``ferry: error:`` line,
    no traceback, and not the CLI's last-resort 'internal error' (an unexpected exception)."""
    assert_clean_failure(result)
    assert "internal error" not in result.stderr, result.stderr
    assert result.returncode in (1, 2), (result.returncode, result.stderr)
    if contains is not None:  # the reason may be on the error line or in the printed report
        assert contains.lower() in (result.stderr + result.stdout).lower(), result.stderr + result.stdout


def unchanged(before: dict[str, str], after: dict[str, str], *, may_add: tuple[str, ...] = (),
              ignore: tuple[str, ...] = ()) -> bool:
    """True when everything in ``before`` is in ``after`` unchanged and nothing was added, except
    new paths under ``may_add`` (e.g. content-addressed, verified, unreferenced blobs) and keys
    starting with ``ignore`` (e.g. ``ledger:channels``, which a valid but refused bundle may move)."""
    def keep(k: str) -> bool:
        return not k.startswith(ignore) if ignore else True

    b = {k: v for k, v in before.items() if keep(k)}
    a = {k: v for k, v in after.items() if keep(k) and (k in b or not (may_add and k.startswith(may_add)))}
    assert a == b, {"changed or removed": sorted(k for k in b if a.get(k) != b[k]),
                    "added": sorted(k for k in a if k not in b)}
    return True
