"""The hub inventory of sites: their keys, what their return bundles said, pending updates.

``HUB/sites/inventory.json`` (plain JSON, written atomically under ``HUB/sites/lock``) holds
one record per site: its public key (one key per site, docs/bundle-format.md §13.1), the last
return sequence accepted, the last audit entry received (seq and hash, for continuity), last
contact, the receipt and status it reported, refusals, pending model updates and drift files.
The files a return bundle carried are kept under ``HUB/sites/<site>/<sequence>/``.

Every check that can refuse a return bundle runs before anything is written: a refusal leaves
the inventory unchanged. The command line (``ferry return import``) verifies the bundle with
the edge's reader and hands the verified files here; this module never reads a medium.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from manifests.durable import make_dirs, write_atomic
from manifests.freshness import bundle_time_problem
from manifests.errors import FormatError, PlaceError, PolicyError, UsageError, VerificationError
from manifests.keys import key_id, parse_public
from manifests.locking import acquire
from manifests.model import NAME_RE
from manifests.text import forbidden_char, parse_utc_or_none
from manifests.returns import GENESIS, ReturnDoc

INVENTORY_FORMAT = "ferry-hub-inventory"
SITES_DIR = "sites"
INVENTORY_NAME = "inventory.json"
REFUSALS_NAME = "refusals.jsonl"
#: Staging folders of return bundles being checked: ``.incoming-PID-RANDOM`` under HUB/sites.
INCOMING_PREFIX = ".incoming-"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class AuditSlice:
    """The audit entries a return bundle carried, already checked for their own hashes and links.

    ``first_seq``/``first_prev``: the first entry's seq and prev; ``last_seq``/``last_hash`` the
    last's; ``hashes`` every entry's hash by seq (to compare an overlap). Empty: ``count`` 0.
    """

    count: int
    first_seq: int = 0
    first_prev: str = GENESIS
    last_seq: int = -1
    last_hash: str = GENESIS
    hashes: tuple[tuple[int, str], ...] = ()


class Inventory:
    """The hub's record of sites under ``HUB/sites`` (see the module docstring)."""

    def __init__(self, hub: Path) -> None:
        self.root = Path(hub) / SITES_DIR
        self.path = self.root / INVENTORY_NAME

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The inventory, held against other writers; saved atomically when the block ends without error."""
        try:
            make_dirs(self.root)
        except OSError as exc:
            raise PlaceError("state", str(self.root), f"--hub {self.root}: cannot create ({exc.strerror or exc})") from None
        lock = acquire(self.root, "lock", place="state", label=f"hub inventory {self.root}", what="inventory update")
        try:
            doc = self.read()
            yield doc
            write_atomic(self.path, json.dumps(doc, sort_keys=True, indent=1).encode(), "state")
        finally:
            lock.release()

    def incoming(self) -> Path:
        """A new, empty staging folder for the files of one return bundle being checked
        (``HUB/sites/.incoming-PID-RANDOM``; the caller removes it). Staging folders a killed
        ``ferry return import`` left behind (its process gone) are removed first, so a kill -9
        costs no disk space for good; a live import's folder is left alone.

        Returns:
            The folder, created. Raises: PlaceError: ``HUB/sites`` cannot be written.
        """
        try:
            make_dirs(self.root)
            for old in self.root.glob(f"{INCOMING_PREFIX}*"):
                pid = old.name[len(INCOMING_PREFIX):].split("-")[0]
                if pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(old, ignore_errors=True)
            folder = self.root / f"{INCOMING_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
            folder.mkdir()
        except OSError as exc:
            raise PlaceError("state", str(self.root), f"--hub {self.root}: cannot write ({exc.strerror or exc})") from None
        return folder

    def read(self) -> dict[str, Any]:
        """The inventory document (an empty one if none was written yet).

        Raises:
            PlaceError: the file is unreadable or not an inventory (naming it).
        """
        if not self.path.exists():
            return {"format": INVENTORY_FORMAT, "formatVersion": "1.0", "sites": {}}
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise PlaceError("state", str(self.path), f"{self.path}: unreadable hub inventory ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != INVENTORY_FORMAT or not isinstance(doc.get("sites"), dict):
            raise PlaceError("state", str(self.path), f"{self.path}: not a ferry hub inventory")
        return doc

    def add_site(self, name: str, public_pem: bytes) -> str:
        """Register ``name`` with its public key (one per site); returns the key id.

        Raises:
            UsageError: a bad name, or the key already belongs to another site, or the site has
            another key (keys are not replaced silently). KeyFileError: not a public key.
        """
        if not NAME_RE.match(name):
            raise UsageError(f"site name {name!r} must be letters, digits, '.', '_' or '-' (at most 128)")
        kid = key_id(parse_public(public_pem, f"key of site {name}"))
        with self.locked() as doc:
            for other, rec in doc["sites"].items():
                if rec.get("keyid") == kid and other != name:
                    raise UsageError(f"key {kid[:16]}… is already the key of site {other}: one key per site")
            rec = doc["sites"].get(name)
            if rec is not None and rec.get("keyid") not in (None, kid):
                raise UsageError(f"site {name} already has key {rec['keyid'][:16]}…; remove the site first to change it")
            rec = rec or _new_site()
            rec.update(keyid=kid, publicKey=public_pem.decode("ascii"))
            doc["sites"][name] = rec
        return kid

    def site_keys(self) -> dict[str, tuple[str, str]]:
        """Key id -> (site, PEM) of every registered site."""
        return {r["keyid"]: (n, r["publicKey"]) for n, r in self.read()["sites"].items() if r.get("keyid")}

    def record_refusal(self, site: str | None, when: str, reason: str) -> None:
        """Log a refused return bundle in ``refusals.jsonl`` (append-only); the inventory itself is unchanged."""
        try:
            make_dirs(self.root)
            with open(self.root / REFUSALS_NAME, "ab") as f:
                f.write(json.dumps({"site": site, "time": when, "reason": reason[:500]}, sort_keys=True).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass  # bookkeeping never hides the refusal itself

    def refusals(self) -> list[dict[str, Any]]:
        """Every refusal logged, oldest first (unreadable lines skipped)."""
        out = []
        try:
            with open(self.root / REFUSALS_NAME, "rb") as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(r, dict):
                        out.append(r)
        except FileNotFoundError:
            pass
        return out

    def record_return(self, *, site: str, keyid: str, sequence: int, digest: str, when: str, ret: ReturnDoc,
                      audit: AuditSlice, files: Path, receipt: dict[str, Any], status: dict[str, Any],
                      known_base: set[tuple[str, str]] | None, created: str | None = None) -> Path:
        """Check a verified return bundle against what the hub knows, then record it.

        Args:
            site: the site the bundle's channel names; keyid: the key that signed it.
            sequence: ``bundle.sequence``; digest: the manifest digest; when: the hub's clock.
            ret: its ``return.json``; audit: the carried audit entries (already hash-checked).
            files: a folder holding the verified files (``report/…`` and ``updates/<model>.safetensors``),
                moved into ``HUB/sites/<site>/<sequence>``.
            receipt, status: the parsed receipt and status it carried.
            known_base: (model, version) pairs the hub holds; None to skip that check.
            created: the manifest's signed ``bundle.created``, kept as the site's newest signed
                time (:meth:`time_problem` uses it as a witness for clocks).
        Returns:
            The folder the files were kept in.
        Raises:
            VerificationError: not the site's key. PolicyError: a replay or older sequence, an audit
            trail that does not continue the last one received, an update from a base the hub never
            shipped. FormatError: ``return.json`` names another site. The inventory is unchanged then.
        """
        with self.locked() as doc:
            rec = doc["sites"].get(site)
            if rec is None or rec.get("keyid") is None:
                raise VerificationError(f"return bundle of site {site}: no key registered for that site")
            if rec["keyid"] != keyid:
                raise VerificationError(f"return bundle of site {site}: signed by key {keyid[:16]}…, "
                                        f"not the key of site {site}")
            if ret.site != site:
                raise FormatError(f"return bundle of site {site}: its return.json names site {ret.site}")
            last = rec.get("lastSequence", 0)
            if sequence <= last:
                raise PolicyError(f"return bundle of site {site} has sequence {sequence}, but {last} was already "
                                  "received: a replay or an older bundle")
            _check_continuity(site, rec.get("audit"), audit)
            if known_base is not None:
                for u in ret.updates:
                    if (u.model, u.base) not in known_base:
                        raise PolicyError(f"return bundle of site {site}: update of model {u.model} from base "
                                          f"{u.base}, a version the hub never shipped")
            keep = self.root / site / str(sequence)
            if keep.exists():
                shutil.rmtree(keep)
            make_dirs(keep.parent)
            try:
                os.replace(files, keep)
            except OSError:
                shutil.copytree(files, keep)
            rec["lastSequence"] = sequence
            rec["lastContact"] = when
            rec["lastBundle"] = digest
            rec["reported"] = ret.created
            if created is not None and (rec.get("lastCreated") is None or created > rec["lastCreated"]):
                rec["lastCreated"] = created  # same fixed-width UTC form: text order is time order
            if audit.count:
                rec["audit"] = {"seq": audit.last_seq, "hash": audit.last_hash}
            rec["receipt"] = receipt
            rec["status"] = status
            pending = [u for u in rec.get("updates", []) if u["model"] not in {x.model for x in ret.updates}]
            for u in ret.updates:
                pending.append({**u.to_dict(), "sequence": sequence, "bundle": digest, "keyid": keyid,
                                "file": str(keep / "updates" / f"{u.model}.safetensors")})
            rec["updates"] = pending
            rec["drift"] = [str(keep / "report" / d) for d in ret.drift]
            rec["metrics"] = [str(keep / "report" / m) for m in ret.metrics]
            doc["sites"][site] = rec
        return keep

    def time_problem(self, site: str, created: str, expires: str | None, now: datetime) -> str | None:
        """Why a return bundle of ``site`` signed at ``created`` and valid until ``expires`` is not
        acceptable at ``now``, or None: the edge's rule for hub bundles, the other way round
        (docs/bundle-format.md §3.1 ``expires``, §13; manifests.freshness): refused from its
        expiry on, and, when it has one, if signed more than 5 minutes ahead of the hub's clock;
        the newest ``bundle.created`` the hub accepted from that site tells whose clock looks wrong.

        Args:
            site: the site the bundle's channel names; created, expires: its signed times
                (``YYYY-MM-DDTHH:MM:SSZ``; expires None: it never expires); now: the hub's clock (UTC).
        Returns:
            The reason, for a PolicyError the caller raises naming the bundle, or None.
        Raises:
            PlaceError: the inventory is unreadable.
        """
        rec = self.read()["sites"].get(site) or {}
        seen = parse_utc_or_none(str(rec["lastCreated"])) if rec.get("lastCreated") else None
        return bundle_time_problem(created, expires, now, seen, writer="site", reader="hub")

    def receipt_file(self, site: str) -> Path:
        """The receipt carried by ``site``'s last return bundle (for ``export --since-site``).

        Raises:
            UsageError: the site is unknown or sent no return bundle yet.
        """
        rec = self.read()["sites"].get(site)
        if rec is None:
            raise UsageError(f"--since-site {site}: no such site in the hub inventory {self.root} (ferry sites)")
        if not rec.get("lastSequence"):
            raise UsageError(f"--since-site {site}: the site has sent no return bundle yet; give --since RECEIPT")
        return self.root / site / str(rec["lastSequence"]) / "report" / "receipt.json"

    def pending_updates(self, model: str, base: str) -> list[dict[str, Any]]:
        """Updates of ``model`` trained from ``base`` not yet aggregated, one per site (``site`` added), by site name."""
        out = []
        for name, rec in sorted(self.read()["sites"].items()):
            for u in rec.get("updates", []):
                if u["model"] == model and u["base"] == base and not u.get("aggregatedInto"):
                    out.append({**u, "site": name})
        return out

    def mark_aggregated(self, updates: list[dict[str, Any]], version: str) -> None:
        """Mark ``updates`` (as :meth:`pending_updates` gave them) as aggregated into ``version``."""
        with self.locked() as doc:
            for u in updates:
                for mine in doc["sites"].get(u["site"], {}).get("updates", []):
                    if mine["model"] == u["model"] and mine["bundle"] == u["bundle"]:
                        mine["aggregatedInto"] = version


def parse_exclusions(values: list[str]) -> dict[str, str | None]:
    """``ferry aggregate --exclude SITE[=REASON]`` (repeatable) -> site name -> the operator's
    reason (None when not given). A site name never holds ``=`` (:data:`manifests.model.NAME_RE`),
    so the first one splits the name from the reason.

    Args:
        values: the ``--exclude`` values, as given.
    Returns:
        site -> reason (stripped; None when empty or not given), in the order given.
    Raises:
        UsageError: a value whose site part is not a site name, a site given twice, or a
        reason with a character docs/bundle-format.md section 2 forbids in text ferry prints
        (:func:`manifests.text.forbidden_char`: newline, ESC, U+202E, ...).
    """
    out: dict[str, str | None] = {}
    for value in values:
        site, _, why = value.partition("=")
        if not NAME_RE.match(site):
            raise UsageError(f"--exclude {value!r}: write SITE or SITE=REASON (a site name is letters, digits, "
                             "'.', '_' or '-')")
        if site in out:
            raise UsageError(f"--exclude {site}: given twice")
        bad = forbidden_char(why)  # the reason is printed and kept in provenance.json
        if bad is not None:
            raise UsageError(f"--exclude {site}: the reason contains a control character or invisible format "
                             f"character ({bad}); write it as plain text")
        out[site] = why.strip() or None
    return out


@dataclass(frozen=True)
class Selection:
    """The updates one aggregation averages, and those the operator left out of it.

    ``kept``: pending updates (as :meth:`Inventory.pending_updates` gives them), in its order.
    ``excluded``: one provenance record per excluded site: ``site``, ``reason`` (or None) and
    ``updates`` (``sequence`` and ``bundle`` of each pending update left out, which stays pending)."""

    kept: list[dict[str, Any]]
    excluded: list[dict[str, Any]]


def select_updates(pending: list[dict[str, Any]], sites: list[str], exclude: dict[str, str | None],
                   what: str, where: str) -> Selection:
    """Leave the sites in ``exclude`` out of an aggregation (``ferry aggregate --exclude``).

    Args:
        pending: the pending updates of the model from the base (:meth:`Inventory.pending_updates`).
        sites: every site the hub inventory knows. exclude: :func:`parse_exclusions`'s.
        what, where: the model and base, and the hub, for messages (``model sentiment from base
            1.2.0``, ``--hub /srv/ferry-hub``).
    Returns:
        the updates to average and the provenance records of the sites left out.
    Raises:
        UsageError: an excluded site the inventory does not know; no pending update at all; or
        every site with a pending update excluded (nothing would be averaged).
    """
    unknown = [s for s in exclude if s not in sites]
    if unknown:
        raise UsageError(f"--exclude {unknown[0]}: no such site in the hub inventory of {where} "
                         f"(sites: {', '.join(sorted(sites)) or 'none'})")
    if not pending:
        raise UsageError(f"{where}: no pending updates of {what}")
    kept = [u for u in pending if u["site"] not in exclude]
    if not kept:
        raise UsageError(f"--exclude leaves out every site with a pending update of {what} "
                         f"({', '.join(sorted({u['site'] for u in pending}))}): nothing to aggregate")
    excluded = [{"site": site, "reason": why,
                 "updates": [{"sequence": u["sequence"], "bundle": u["bundle"]} for u in pending if u["site"] == site]}
                for site, why in exclude.items()]
    return Selection(kept, excluded)


def _new_site() -> dict[str, Any]:
    return {"keyid": None, "lastSequence": 0, "lastContact": None, "audit": None, "receipt": None,
            "status": None, "refusals": [], "updates": [], "drift": [], "metrics": []}


def _check_continuity(site: str, last: dict[str, Any] | None, audit: AuditSlice) -> None:
    """The carried entries continue the last one received (docs/bundle-format.md §13.1)."""
    if audit.count == 0:
        return
    last_seq = -1 if last is None else int(last["seq"])
    last_hash = GENESIS if last is None else str(last["hash"])
    if audit.first_seq > last_seq + 1:
        had = "has received none yet" if last_seq < 0 else f"last received entry {last_seq}"
        raise PolicyError(f"return bundle of site {site}: its audit trail starts at entry {audit.first_seq}, "
                          f"but the hub {had}: entries {last_seq + 1} to "
                          f"{audit.first_seq - 1} are missing (export again with --audit-from {last_seq + 1})")
    if audit.first_seq == last_seq + 1:
        if audit.first_prev != last_hash:
            raise PolicyError(f"return bundle of site {site}: its audit entry {audit.first_seq} does not continue "
                              f"entry {last_seq} the hub received (the trail was rewritten)")
        return
    carried = dict(audit.hashes)
    if carried.get(last_seq) != last_hash:
        raise PolicyError(f"return bundle of site {site}: its audit entry {last_seq} differs from the one the hub "
                          "received (the trail was rewritten)")
