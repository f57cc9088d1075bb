"""Signed trust policies (issue #15 items 2-4): pinning, rotation carried in bundles, expiry,
revocation, and every refusal on the real command line with nothing changed.

Scenarios are tables of policy versions — keys, thresholds, signers — in the manner of
python-tuf's key-rotation tests, but each one runs through ``ferry trust update`` or
``ferry import``.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.trust_store import TrustStore
from manifests import canonical
from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME
from manifests.errors import FerryError
from manifests.keys import generate, key_id, load_private, public_pem
from manifests.model import Manifest
from manifests.root import Root, RootKey, format_time, parse_root
from manifests.signing import TRUST_PAYLOAD_TYPE, sign
from tests.support.common import assert_clean_failure, run_ferry
from tests.support.export import make_model, write_spec

NOW = datetime.now(timezone.utc)
LATER = format_time(NOW + timedelta(days=365))
PAST = "2020-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("trust-keys")
    return {n: generate(n, out)[0] for n in "abcde"}


def _rk(keys: dict[str, Path], name: str, expires: str | None = None) -> RootKey:
    pub = load_private(keys[name]).public_key()
    return RootKey(key_id(pub), name, public_pem(pub).decode(), None, expires)


def write_root(folder: Path, keys: dict[str, Path], *, version: int, members: list[str], signers: list[str],
               root_t: int = 1, bundles_t: int = 1, revoked: tuple[str, ...] = (), policy_id: str = "site",
               expired_keys: tuple[str, ...] = (), expires: str = LATER, extra_keys: tuple[RootKey, ...] = ()) -> Path:
    """A signed policy document as `ferry trust create` + `ferry trust sign` write it."""
    root = Root(policy_id=policy_id, version=version, expires=expires,
                keys=tuple(_rk(keys, m, PAST if m in expired_keys else None) for m in members) + extra_keys,
                revoked=tuple(sorted(key_id(load_private(keys[r]).public_key()) for r in revoked)),
                root_threshold=root_t, bundle_threshold=bundles_t)
    data = canonical.encode(root.to_dict())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"v{version}-{policy_id}-{'-'.join(signers)}.json"
    path.write_bytes(data)
    Path(str(path) + ".sig").write_bytes(sign(data, [load_private(keys[s]) for s in signers],
                                              TRUST_PAYLOAD_TYPE).to_bytes())
    return path


def _state(edge: Path) -> tuple[list[int], bytes]:
    trail = edge / "audit" / "trail.jsonl"
    return TrustStore(edge).versions(), trail.read_bytes() if trail.exists() else b""


def _export(tmp: Path, key: Path, out: str, hub: str = "hub", *extra: str, seed: int = 0) -> Path:
    model = make_model(tmp / f"model-{out}", count=2, size=32 * 1024, seed=seed)
    spec = write_spec(tmp / f"{out}.yaml", [("m", f"1.0.{seed}", str(model))])
    r = run_ferry("export", spec, "--out", tmp / out, "--key", key, "--state", tmp / hub, *extra)
    assert r.returncode == 0, r.stderr
    return tmp / out


@pytest.fixture()
def edge_v1(tmp_path: Path, keys: dict[str, Path]) -> Path:
    """An edge pinned to v1: keys a, b and c (c expired), two of them sign policy updates."""
    v1 = write_root(tmp_path / "pol", keys, version=1, members=["a", "b", "c"], expired_keys=("c",),
                    root_t=2, signers=["a", "b"])
    r = run_ferry("trust", "init", "--state", tmp_path / "edge", v1)
    assert r.returncode == 0, r.stderr
    return tmp_path / "edge"


def test_init_pins_once_and_records_it(tmp_path: Path, keys: dict[str, Path], edge_v1: Path) -> None:
    shown = run_ferry("trust", "show", "--state", edge_v1, "--json")
    doc = json.loads(shown.stdout)
    assert (doc["policyId"], doc["version"]) == ("site", 1)
    assert {k["name"]: k["status"] for k in doc["keys"]}["c"].startswith("key expired")
    again = write_root(tmp_path / "pol2", keys, version=2, members=["a", "b"], root_t=2, signers=["a", "b"])
    before = _state(edge_v1)
    assert_clean_failure(run_ferry("trust", "init", "--state", edge_v1, again), code=2, contains="already pins")
    assert _state(edge_v1) == before
    audit = run_ferry("audit", "show", "--state", edge_v1, "--json")
    assert "trust-pinned" in audit.stdout


def test_a_first_policy_must_sign_itself(tmp_path: Path, keys: dict[str, Path]) -> None:
    v1 = write_root(tmp_path, keys, version=1, members=["a", "b"], root_t=2, signers=["a"])
    assert_clean_failure(run_ferry("trust", "init", "--state", tmp_path / "edge", v1), code=1,
                         contains="not signed by its own root threshold")
    assert TrustStore(tmp_path / "edge").versions() == []


def test_update_signed_by_current_and_own_threshold_is_accepted(tmp_path: Path, keys: dict[str, Path],
                                                              edge_v1: Path) -> None:
    v2 = write_root(tmp_path / "pol", keys, version=2, members=["a", "d"], root_t=2, signers=["a", "b", "d"])
    r = run_ferry("trust", "update", "--state", edge_v1, v2)
    assert r.returncode == 0, r.stderr
    assert TrustStore(edge_v1).versions() == [1, 2]
    assert "trust-updated" in run_ferry("audit", "show", "--state", edge_v1, "--json").stdout


# (name, policy version builder kwargs, expected message); each refused by `ferry trust update`
REFUSED = [
    ("below-threshold", dict(version=2, members=["a", "b"], root_t=2, signers=["a", "b"][:1]),
     "not signed by a threshold of the current"),
    ("new-keys-only", dict(version=2, members=["d", "e"], root_t=2, signers=["d", "e"]),
     "not signed by a threshold of the current"),
    ("not-by-its-own-keys", dict(version=2, members=["d", "e"], root_t=2, signers=["a", "b", "d"]),
     "not signed by a threshold of its own keys"),
    ("expired-key", dict(version=2, members=["a", "b"], root_t=2, signers=["a", "c"]),
     "key expired"),
    ("equal-version", dict(version=1, members=["a", "b"], root_t=2, signers=["a", "b"]),
     "not newer"),
    ("other-policy-id", dict(version=2, members=["a", "b"], root_t=2, signers=["a", "b"], policy_id="other"),
     "is not this site's"),
    ("lock-out", dict(version=2, members=["a", "b"], root_t=3, signers=["a", "b"]),
     "would lock the site out"),
    ("expired-policy", dict(version=2, members=["a", "b"], root_t=2, signers=["a", "b"], expires=PAST),
     "expired at"),
]


@pytest.mark.parametrize("name,kwargs,message", REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_policy_updates_are_refused_and_change_nothing(tmp_path: Path, keys: dict[str, Path], edge_v1: Path,
                                                           name: str, kwargs: dict, message: str) -> None:
    bad = write_root(tmp_path / "bad", keys, **kwargs)
    before = _state(edge_v1)
    assert_clean_failure(run_ferry("trust", "update", "--state", edge_v1, bad), code=1, contains=message)
    assert _state(edge_v1) == before


def test_revoked_keys_and_lower_versions_after_a_rotation(tmp_path: Path, keys: dict[str, Path], edge_v1: Path) -> None:
    v2 = write_root(tmp_path / "pol", keys, version=2, members=["a", "b", "d"], revoked=("b",), root_t=2,
                    signers=["a", "b", "d"])
    assert run_ferry("trust", "update", "--state", edge_v1, v2).returncode == 0
    before = _state(edge_v1)
    by_revoked = write_root(tmp_path / "bad", keys, version=3, members=["a", "d"], revoked=("b",), root_t=1,
                            signers=["b"])
    assert_clean_failure(run_ferry("trust", "update", "--state", edge_v1, by_revoked), code=1, contains="revoked")
    lower = write_root(tmp_path / "bad", keys, version=1, members=["a", "b"], root_t=1, signers=["a", "d"])
    assert_clean_failure(run_ferry("trust", "update", "--state", edge_v1, lower), code=1, contains="not newer")
    unrevoke = write_root(tmp_path / "bad", keys, version=3, members=["a", "b", "d"], root_t=2, signers=["a", "d"])
    assert_clean_failure(run_ferry("trust", "update", "--state", edge_v1, unrevoke), code=1,
                         contains="revocations are permanent")
    assert _state(edge_v1) == before


def test_the_same_key_twice_under_two_ids_is_refused(tmp_path: Path, keys: dict[str, Path], edge_v1: Path) -> None:
    twin = dataclasses.replace(_rk(keys, "a"), name="a-again")
    bad = write_root(tmp_path / "bad", keys, version=2, members=["a", "b"], root_t=2, signers=["a", "b"],
                     extra_keys=(twin,))
    before = _state(edge_v1)
    assert_clean_failure(run_ferry("trust", "update", "--state", edge_v1, bad), code=1, contains="same key")
    # a key id that is not the key's own is refused too, so one key cannot pose as two
    forged = dataclasses.replace(_rk(keys, "a"), keyid="0" * 64, name="a-forged")
    bad = write_root(tmp_path / "bad2", keys, version=2, members=["a", "b"], root_t=2, signers=["a", "b"],
                     extra_keys=(forged,))
    assert_clean_failure(run_ferry("trust", "update", "--state", edge_v1, bad), code=2, contains="keyid does not match")
    assert _state(edge_v1) == before
    # and in a YAML policy: the same file under two names
    (tmp_path / "twice.yaml").write_text(
        "apiVersion: ferry/v1\nkind: TrustRoot\npolicyId: site\nversion: 2\nexpires: 30d\n"
        f"keys:\n  - {{name: one, file: {keys['a'].with_suffix('.pub')}}}\n"
        f"  - {{name: two, file: {keys['a'].with_suffix('.pub')}}}\nthresholds: {{root: 2, bundles: 2}}\n")
    assert_clean_failure(run_ferry("trust", "create", tmp_path / "twice.yaml", "--out", tmp_path / "t.json"),
                         contains="same key")
    assert not (tmp_path / "t.json").exists()


def test_create_refuses_a_lock_out(tmp_path: Path, keys: dict[str, Path]) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: ferry/v1\nkind: TrustRoot\npolicyId: site\nversion: 1\nexpires: 30d\n"
        f"keys:\n  - {{name: a, file: {keys['a'].with_suffix('.pub')}}}\nthresholds: {{root: 2, bundles: 1}}\n")
    assert_clean_failure(run_ferry("trust", "create", tmp_path / "p.yaml", "--out", tmp_path / "p.json"),
                         code=1, contains="would lock the site out")


def test_rotation_a_to_b_carried_in_a_bundle(tmp_path: Path, keys: dict[str, Path]) -> None:
    """The hub rotates from key a to key d; the edge learns it from an ordinary bundle."""
    v1 = write_root(tmp_path / "pol", keys, version=1, members=["a"], signers=["a"])
    v2 = write_root(tmp_path / "pol", keys, version=2, members=["d"], revoked=("a",), signers=["a", "d"])
    edge, hub = tmp_path / "edge", tmp_path / "hub"
    for state in (edge, hub):
        assert run_ferry("trust", "init", "--state", state, v1).returncode == 0
    old = _export(tmp_path, keys["a"], "old", "hub-old", seed=1)  # signed by a before the rotation
    assert run_ferry("trust", "update", "--state", hub, v2).returncode == 0
    usb = _export(tmp_path, keys["d"], "usb", "hub", seed=2)
    assert sorted(p.name for p in (usb / "trust").iterdir()) == [
        "1.root.json", "1.root.json.sig", "2.root.json", "2.root.json.sig"]
    # --trust and a pinned policy together are ambiguous
    assert_clean_failure(run_ferry("import", usb, "--state", edge, "--trust", keys["a"].with_suffix(".pub")),
                         code=2, contains="drop --trust")
    r = run_ferry("import", usb, "--state", edge)
    assert r.returncode == 0, r.stderr
    assert TrustStore(edge).versions() == [1, 2]
    trail = run_ferry("audit", "show", "--state", edge, "--json").stdout
    assert "trust-updated" in trail
    # media signed only by the revoked key still circulate: refused
    r = run_ferry("import", old, "--state", edge)
    assert_clean_failure(r, code=1, contains="revoked")
    # verify reads a signed policy file as --trust and names its version
    rep = run_ferry("verify", usb, "--trust", v2, "--json")
    assert rep.returncode == 0, rep.stderr
    assert json.loads(rep.stdout)["trust"]["policy"]["version"] == 2
    # and with --state alone, the policy the edge pins
    rep = run_ferry("verify", old, "--state", edge, "--json")
    assert rep.returncode == 1 and "revoked" in rep.stdout


def test_a_carried_update_that_fails_refuses_the_import(tmp_path: Path, keys: dict[str, Path], edge_v1: Path) -> None:
    usb = _export(tmp_path, keys["a"], "usb")
    bad = write_root(tmp_path / "bad", keys, version=2, members=["d", "e"], root_t=2, signers=["d", "e"])
    (usb / "trust").mkdir()
    (usb / "trust" / "2.root.json").write_bytes(bad.read_bytes())
    (usb / "trust" / "2.root.json.sig").write_bytes(Path(str(bad) + ".sig").read_bytes())
    r = run_ferry("import", usb, "--state", edge_v1)
    assert_clean_failure(r, code=1, contains="policy update that was refused")
    assert TrustStore(edge_v1).versions() == [1]
    assert not (edge_v1 / "models").exists() or not any((edge_v1 / "models").iterdir())


def _resign(bundle: Path, key: Path, **changes: str) -> None:
    data = (bundle / MANIFEST_NAME).read_bytes()
    m = Manifest.from_bytes(data)
    m2 = dataclasses.replace(m, bundle=dataclasses.replace(m.bundle, **changes))
    new = m2.to_bytes()
    (bundle / MANIFEST_NAME).write_bytes(new)
    (bundle / SIGNATURE_NAME).write_bytes(sign(new, [load_private(key)]).to_bytes())


def test_expired_bundles_and_clock_skew(tmp_path: Path, keys: dict[str, Path]) -> None:
    pub = keys["a"].with_suffix(".pub")
    usb = _export(tmp_path, keys["a"], "usb", "hub", "--expires", "30d")
    m = Manifest.from_bytes((usb / MANIFEST_NAME).read_bytes())
    # expires needs 1.1; a bundle with a model says 1.3 (the publishing digests, which include it)
    assert m.format_version == "1.3" and m.bundle.expires is not None
    assert run_ferry("verify", usb, "--trust", pub).returncode == 0
    _resign(usb, keys["a"], expires="2021-01-01T00:00:00Z", created="2020-12-01T00:00:00Z")
    assert_clean_failure(run_ferry("import", usb, "--trust", pub, "--state", tmp_path / "edge"), code=1,
                         contains="bundle expired at 2021-01-01T00:00:00Z")
    assert_clean_failure(run_ferry("verify", usb, "--trust", pub), code=1)
    future = format_time(NOW + timedelta(days=3))
    _resign(usb, keys["a"], created=future, expires=format_time(NOW + timedelta(days=30)))
    assert_clean_failure(run_ferry("import", usb, "--trust", pub, "--state", tmp_path / "edge"), code=1,
                         contains="the hub's clock looks ahead")
    assert_clean_failure(run_ferry("export", tmp_path / "usb.yaml", "--out", tmp_path / "x", "--key", keys["a"],
                                   "--expires", "soon"), code=2, contains="--expires")


# ---------------------------------------------------------------- the parser, as properties


def _root(keys: dict[str, Path], version: int, names: list[str]) -> Root:
    return Root(policy_id="site", version=version, expires=LATER, keys=tuple(_rk(keys, n) for n in names),
                revoked=(), root_threshold=1, bundle_threshold=1, channel_thresholds={"stable": 1})


@settings(max_examples=50, deadline=None)
@given(version=st.integers(1, 2**53 - 1), names=st.lists(st.sampled_from("abcde"), min_size=1, max_size=5, unique=True))
def test_root_round_trips(keys: dict[str, Path], version: int, names: list[str]) -> None:
    root = _root(keys, version, names)
    parsed = parse_root(root.to_bytes())
    assert parsed.to_bytes() == root.to_bytes() and parsed.version == version


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_root_parser_fails_only_with_ferry_errors(keys: dict[str, Path], data: st.DataObject) -> None:
    raw = bytearray(_root(keys, 3, ["a", "b"]).to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        parse_root(bytes(raw))
    except FerryError:
        pass
