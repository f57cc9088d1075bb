"""The return path (issue #17): site -> hub return bundles, the hub inventory, FedAvg, drift.

End to end on the real CLI: two simulated sites import the hub's sample bundle, "train" (a
deterministic change to every tensor of the sample model), export return bundles; the hub
imports both, aggregates, and every tensor of the new version equals the weighted mean numpy
computes here independently; the next hub export carries it to both sites. Then every bad
input of the issue is refused with one line, the hub inventory unchanged.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support.common import assert_clean_failure, run_ferry

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MODEL = ROOT / "samples" / "models" / "sentiment"
NP = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """An independent safetensors reader (header, then each tensor's bytes), for checking."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + b:8 + n + e], dtype=NP[t["dtype"]]).reshape(t["shape"])
    return out


def write_tensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, object] = {}
    offset = 0
    blobs = []
    names = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def train(path: Path, site: int) -> dict[str, np.ndarray]:
    """A site's 'training': a deterministic change of every tensor of the sample model."""
    tensors = {k: (v.astype(np.float64) * (1 + 0.1 * site) + 0.01 * site).astype(v.dtype)
               for k, v in read_tensors(SAMPLE_MODEL / "model.safetensors").items()}
    write_tensors(path, tensors)
    return tensors


def drift(path: Path, counts: list[int], version: str = "1.2.0") -> Path:
    path.write_text(json.dumps({"format": "ferry-drift", "formatVersion": "1.0", "model": "sentiment",
                                "version": version, "features": {"length": {"edges": [0, 10, 50, 200, 1000],
                                                                            "counts": counts}}}))
    return path


def return_spec(path: Path, update: Path | None, examples: int = 100, base: str = "1.2.0",
                drift_file: Path | None = None, metrics: Path | None = None) -> Path:
    lines = ["apiVersion: ferry/v1", "kind: Return", "spec:"]
    if update is not None:
        lines += ["  updates:", "    - model: sentiment", f"      base: \"{base}\"", f"      path: {update}",
                  f"      examples: {examples}", "      metrics: {loss: 0.25, accuracy: 0.9}"]
    if drift_file is not None:
        lines += [f"  drift: [{drift_file}]"]
    if metrics is not None:
        lines += [f"  metrics: {metrics}"]
    if len(lines) == 3:
        lines += ["  updates: []"]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class World:
    root: Path
    hub: Path
    models: Path
    keys: Path
    edges: dict[str, Path]

    def key(self, name: str) -> Path:
        return self.keys / f"{name}.key"

    def pub(self, name: str) -> Path:
        return self.keys / f"{name}.pub"

    def inventory(self) -> bytes:
        return (self.hub / "sites" / "inventory.json").read_bytes()


def ok(*args: object) -> str:
    r = run_ferry(*args)
    assert r.returncode == 0, f"ferry {' '.join(map(str, args))}\n{r.stderr}"
    return r.stdout


def make_world(tmp: Path, sites: tuple[str, ...]) -> World:
    keys = tmp / "keys"
    for name in ("hub",) + sites + ("stranger",):
        ok("keys", "generate", name, "--out", keys)
    w = World(tmp, tmp / "hub", tmp / "models", keys, {})
    ok("export", ROOT / "samples" / "bundle.yaml", "--out", tmp / "usb1", "--key", w.key("hub"), "--state", w.hub)
    for name in sites:
        edge = tmp / f"edge-{name}"
        ok("import", tmp / "usb1", "--trust", w.pub("hub"), "--state", edge)
        ok("site", "set", "--state", edge, "--name", name)
        ok("sites", "add", name, "--key", w.pub(name), "--hub", w.hub)
        w.edges[name] = edge
    shutil.copytree(SAMPLE_MODEL, w.models / "sentiment" / "1.2.0")
    return w


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("returns"), ("site-01", "site-02"))


def test_two_sites_return_updates_the_hub_aggregates_and_ships_the_mean(world: World) -> None:
    w = world
    trained = {}
    examples = {"site-01": 100, "site-02": 300}
    for i, site in enumerate(("site-01", "site-02"), start=1):
        trained[site] = train(w.root / f"{site}.safetensors", i)
        spec = return_spec(w.root / f"{site}-return.yaml", w.root / f"{site}.safetensors", examples[site],
                           drift_file=drift(w.root / f"{site}-drift.json", [10, 80, 30, 5] if i == 1 else [900, 5, 5, 1]))
        ok("return", "export", "--state", w.edges[site], "--spec", spec, "--out", w.root / f"ret-{site}",
           "--key", w.key(site))
        ok("return", "import", w.root / f"ret-{site}", "--hub", w.hub, "--models", w.models)

    # drift: a reference shipped with 1.2.0; site-02's inputs moved, site-01's did not
    drift(w.models / "sentiment" / "1.2.0" / "drift-reference.json", [12, 78, 32, 4])
    doc = json.loads(ok("sites", "--hub", w.hub, "--models", w.models, "--json", "--html", w.root / "sites.html"))
    by = {s["site"]: s for s in doc["sites"]}
    assert by["site-01"]["driftAlerts"] == [] and len(by["site-02"]["driftAlerts"]) == 1
    assert by["site-02"]["lastSequence"] == 1 and by["site-02"]["lastContact"]
    assert {"kind": "model", "name": "sentiment", "version": "1.2.0"} in by["site-01"]["runs"]
    assert [u["examples"] for u in by["site-02"]["pendingUpdates"]] == [300]
    assert "site-02" in (w.root / "sites.html").read_text()

    out = w.models / "sentiment" / "1.3.0"
    ok("aggregate", "sentiment", "--base", "1.2.0", "--version", "1.3.0", "--out", out, "--hub", w.hub,
       "--models", w.models)
    got = read_tensors(out / "model.safetensors")
    assert set(got) == set(trained["site-01"])
    for name, value in got.items():
        a, b = trained["site-01"][name], trained["site-02"][name]
        wide = np.float64 if a.dtype == np.float64 else np.float32  # the aggregator's accumulation dtype
        mean = (a.astype(wide) * wide(100 / 400) + b.astype(wide) * wide(300 / 400)).astype(a.dtype)
        assert value.dtype == a.dtype and value.shape == a.shape
        np.testing.assert_array_equal(value, mean, err_msg=name)
    prov = json.loads((out / "provenance.json").read_text())
    assert [(s["site"], s["examples"]) for s in prov["sites"]] == [("site-01", 100), ("site-02", 300)]
    assert (out / "config.json").read_bytes() == (SAMPLE_MODEL / "config.json").read_bytes()
    assert json.loads(ok("sites", "--hub", w.hub, "--json"))["sites"][0]["pendingUpdates"] == []

    # the next hub export carries 1.3.0 (with its provenance) to both sites, as a delta per site
    spec = w.root / "next.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: edge-ai, channel: stable}\n"
                    f"spec:\n  models:\n    - name: sentiment\n      version: 1.3.0\n      path: {out}\n")
    for site, edge in w.edges.items():
        ok("export", spec, "--out", w.root / f"next-{site}", "--key", w.key("hub"), "--state", w.hub,
           "--since-site", site)
        ok("import", w.root / f"next-{site}", "--trust", w.pub("hub"), "--state", edge)
        status = json.loads(ok("status", "--state", edge, "--json"))
        assert {(a["name"], a["version"]) for a in status["installed"] if a["kind"] == "model"} == {("sentiment", "1.3.0")}
        shipped = list(edge.rglob("provenance.json"))
        assert shipped and json.loads(shipped[0].read_text())["version"] == "1.3.0"


def test_bad_return_bundles_are_refused_and_leave_the_inventory_unchanged(tmp_path: Path) -> None:
    w = make_world(tmp_path, ("site-a", "site-b"))
    edge = w.edges["site-a"]
    train(tmp_path / "upd.safetensors", 1)
    good = return_spec(tmp_path / "good.yaml", tmp_path / "upd.safetensors")

    def export(name: str, spec: Path, key: str = "site-a", *extra: object) -> Path:
        ok("return", "export", "--state", edge, "--spec", spec, "--out", tmp_path / name, "--key", w.key(key), *extra)
        return tmp_path / name

    def refused(bundle: Path, contains: str, code: int | None = None, *extra: object) -> None:
        before = w.inventory() if (w.hub / "sites" / "inventory.json").exists() else None
        r = run_ferry("return", "import", bundle, "--hub", w.hub, "--models", w.models, *extra)
        assert_clean_failure(r, code=code, contains=contains)
        after = w.inventory() if (w.hub / "sites" / "inventory.json").exists() else None
        assert before == after

    # signed by another site's key (site-b's key, channel site-a), or an unknown key
    refused(export("other-key", good, "site-b"), "signature", 1)
    refused(export("stranger", good, "stranger"), "signature", 1)
    # an audit trail that does not start where the hub's record ends (nothing received yet: entry 0)
    refused(export("gap", good, "site-a", "--audit-from", "2"), "missing", 1)
    # a base version the hub never shipped, NaN values, wrong shapes
    refused(export("base", return_spec(tmp_path / "b.yaml", tmp_path / "upd.safetensors", base="9.9.9")),
            "never shipped", 1)
    bad = read_tensors(tmp_path / "upd.safetensors")
    nan = {k: v.copy() for k, v in bad.items()}
    nan["classifier.bias"][0] = np.nan
    write_tensors(tmp_path / "nan.safetensors", nan)
    refused(export("nan", return_spec(tmp_path / "n.yaml", tmp_path / "nan.safetensors")), "NaN", 2)
    shape = dict(bad)
    shape["classifier.bias"] = np.zeros(3, dtype=np.float32)
    write_tensors(tmp_path / "shape.safetensors", shape)
    refused(export("shape", return_spec(tmp_path / "s.yaml", tmp_path / "shape.safetensors")), "shape", 2)
    # a hub-bound bundle is no return bundle, and a return bundle is no hub-bound bundle
    refused(tmp_path / "usb1", "signature", 1)
    ok_bundle = export("ok", return_spec(tmp_path / "ok.yaml", tmp_path / "upd.safetensors"), "site-a", "--audit-from", "0")
    assert_clean_failure(run_ferry("import", ok_bundle, "--trust", w.pub("site-a"), "--state", edge), code=1,
                         contains="application/vnd.ferry.return.v1+json")
    ok("return", "import", ok_bundle, "--hub", w.hub, "--models", w.models)
    # a replay, and an older bundle of the same site
    refused(ok_bundle, "replay", 1)
    refused(tmp_path / "base", "older", 1)  # sequence 4 < 7: refused before its base is even looked at
    doc = json.loads(ok("sites", "--hub", w.hub, "--json"))
    a = next(s for s in doc["sites"] if s["site"] == "site-a")
    assert len(a["refusals"]) == 6 and a["lastSequence"] == 7 and a["pendingUpdates"][0]["sequence"] == 7
    assert len(doc["unattributedRefusals"]) == 3  # signatures refused: no site is trusted to have sent them

    # a return bundle lost on the way: the next one does not continue the trail the hub holds
    ok("import", tmp_path / "usb1", "--trust", w.pub("hub"), "--state", edge)  # new audit entries
    export("lost", good)
    ok("import", tmp_path / "usb1", "--trust", w.pub("hub"), "--state", edge)
    refused(export("after-lost", good), "are missing", 1)
    # carried again from where the hub's record ends (entries it holds overlap, identical): accepted
    held = json.loads(w.inventory())["sites"]["site-a"]["audit"]["seq"]
    ok("return", "import", export("resent", good, "site-a", "--audit-from", str(held - 1)), "--hub", w.hub,
       "--models", w.models)
    assert json.loads(w.inventory())["sites"]["site-a"]["audit"]["seq"] > held

    # a tampered pack is refused naming the medium and the site, not only the chunk; a path that
    # holds no bundle at all (a typo) is an error, not a refusal to log in refusals.jsonl
    tampered = tmp_path / "tampered"
    shutil.copytree(ok_bundle, tampered)
    pack = next((tampered / "packs").iterdir())
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    refused(tampered, f"{tampered}: return bundle of site site-a: chunk ", 1)
    logged = (w.hub / "sites" / "refusals.jsonl").read_bytes()
    refused(tmp_path / "good.yaml", "not a folder", 2)
    refused(tmp_path / "no-such", "no such bundle folder", 2)
    assert (w.hub / "sites" / "refusals.jsonl").read_bytes() == logged


def test_a_malformed_drift_file_is_refused_at_the_edge(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text('{"format":"ferry-drift","formatVersion":"1.0","model":"m","version":"1.0.0",'
                                     '"features":{"x":{"edges":[0,1,1],"counts":[1,2]}}}')
    spec = return_spec(tmp_path / "r.yaml", None, drift_file=tmp_path / "d.json")
    state = tmp_path / "edge"
    r = run_ferry("return", "export", "--state", state, "--spec", spec, "--out", tmp_path / "o", "--key", tmp_path / "k")
    assert_clean_failure(r, code=2, contains="strictly increasing")


@pytest.mark.parametrize("content", [b"loss: 0.31\n", b"", struct.pack("<Q", 1 << 40) + b"{}",
                                     struct.pack("<Q", 2) + b"[]", struct.pack("<Q", 64) + b"{}"])
def test_an_update_that_is_not_safetensors_is_refused_at_the_edge(tmp_path: Path, content: bytes) -> None:
    # found trying the guide: a YAML file given as the update was carried, and the hub refused it only
    # after the trip, naming its own staging copy
    (tmp_path / "upd.safetensors").write_bytes(content)
    spec = return_spec(tmp_path / "r.yaml", tmp_path / "upd.safetensors")
    r = run_ferry("return", "export", "--state", tmp_path / "edge", "--spec", spec, "--out", tmp_path / "o",
                  "--key", tmp_path / "k")
    assert_clean_failure(r, code=2, contains="spec.updates[0].path")
    assert "not a safetensors file" in r.stderr and not (tmp_path / "o").exists()


def test_a_hub_refusal_of_an_update_names_the_return_bundle_not_its_staging_copy(tmp_path: Path) -> None:
    w = make_world(tmp_path, ("site-a",))
    train(tmp_path / "upd.safetensors", 1)
    data = (tmp_path / "upd.safetensors").read_bytes()
    (tmp_path / "short.safetensors").write_bytes(data[:-4])  # a header the edge reads; tensor bytes cut short
    spec = return_spec(tmp_path / "r.yaml", tmp_path / "short.safetensors")
    ok("return", "export", "--state", w.edges["site-a"], "--spec", spec, "--out", tmp_path / "ret",
       "--key", w.key("site-a"))
    r = run_ferry("return", "import", tmp_path / "ret", "--hub", w.hub, "--models", w.models)
    assert_clean_failure(r, code=2, contains=f"{tmp_path / 'ret'}: update sentiment of site site-a:")
    assert ".incoming" not in r.stderr


def test_staging_left_by_a_killed_return_import_is_removed_by_the_next(tmp_path: Path) -> None:
    # found by kill -9 during `ferry return import`: HUB/sites/.incoming-* (a copy of every update) stayed for good
    import os
    import subprocess

    w = make_world(tmp_path, ("site-a",))
    dead_pid = subprocess.Popen(["true"])  # a process that has exited: its pid names a killed import
    dead_pid.wait()
    sites = w.hub / "sites"
    stale = sites / f".incoming-{dead_pid.pid}-0a0b0c0d0e0f"
    live = sites / f".incoming-{os.getpid()}-0f0e0d0c0b0a"  # this test's process is alive: an import in progress
    for folder in (stale, live):
        (folder / "updates").mkdir(parents=True)
        (folder / "updates" / "sentiment.safetensors").write_bytes(b"\0" * 1024)
    train(tmp_path / "upd.safetensors", 1)
    spec = return_spec(tmp_path / "r.yaml", tmp_path / "upd.safetensors")
    ok("return", "export", "--state", w.edges["site-a"], "--spec", spec, "--out", tmp_path / "ret",
       "--key", w.key("site-a"))
    ok("return", "import", tmp_path / "ret", "--hub", w.hub, "--models", w.models)
    assert not stale.exists() and live.is_dir()
    assert [p.name for p in sites.glob(".incoming-*")] == [live.name]


def test_hub_commands_take_the_hub_state_as_export_does_and_refuse_a_missing_one(world: World) -> None:
    # found following the guide: HUB is "the folder `ferry export --state` uses", but `ferry sites --state HUB`
    # was "No such option", and a mistyped --hub listed "no sites registered" with exit 0
    from tests.support.common import assert_clean_failure

    assert ok("sites", "--state", world.hub, "--json") == ok("sites", "--hub", world.hub, "--json")
    missing = world.root / "no-such-hub"
    assert_clean_failure(run_ferry("sites", "--hub", missing), code=2, contains=f"--hub {missing}: no such hub state")
    assert_clean_failure(run_ferry("profile", "list", "--state", missing), code=2,
                         contains=f"--state {missing}: no such hub state")
    assert_clean_failure(run_ferry("aggregate", "sentiment", "--base", "1.2.0", "--version", "9.0.0", "--out",
                                   world.root / "agg", "--state", world.hub), code=2, contains="no pending updates")
    assert not missing.exists()


def test_the_norm_screen_refuses_a_poisoned_site_by_name_and_marks_nothing(tmp_path: Path) -> None:
    """Three sites train from 1.2.0; one moved 30 times further than the others (a broken or
    poisoned site): --max-norm-ratio refuses it naming the site and its return bundle, writes no
    version and leaves every update pending; the honest mean still goes through without it."""
    w = make_world(tmp_path, ("site-1", "site-2", "site-3"))
    digests = {}
    for site, step in (("site-1", 1), ("site-2", 2), ("site-3", 30)):
        train(tmp_path / f"{site}.safetensors", step)
        ok("return", "export", "--state", w.edges[site], "--spec",
           return_spec(tmp_path / f"{site}.yaml", tmp_path / f"{site}.safetensors"), "--out", tmp_path / site,
           "--key", w.key(site))
        digests[site] = json.loads(ok("return", "import", tmp_path / site, "--hub", w.hub, "--models", w.models,
                                      "--json"))["digest"]
    before = w.inventory()
    out = w.models / "sentiment" / "1.3.0"
    r = run_ferry("aggregate", "sentiment", "--base", "1.2.0", "--version", "1.3.0", "--out", out, "--hub", w.hub,
                  "--models", w.models, "--max-norm-ratio", "5")
    assert_clean_failure(r, code=1, contains=f"update of site site-3 (return bundle 1, {digests['site-3'][:19]}…): "
                                             "the L2 norm of its update - base is")
    assert "over --max-norm-ratio 5" in r.stderr and "site-1" not in r.stderr
    assert w.inventory() == before and not (out / "model.safetensors").exists()
    assert_clean_failure(run_ferry("aggregate", "sentiment", "--base", "1.2.0", "--version", "1.3.0", "--out", out,
                                   "--hub", w.hub, "--models", w.models, "--max-norm-ratio", "0.5"),
                         code=2, contains="--max-norm-ratio 0.5 must be a finite number of at least 1")
    # a ratio the honest spread passes: every site's update is within 50x of the others'
    done = json.loads(ok("aggregate", "sentiment", "--base", "1.2.0", "--version", "1.3.0", "--out", out,
                         "--hub", w.hub, "--models", w.models, "--max-norm-ratio", "50", "--json"))
    assert done["method"] == "fedavg" and done["sites"] == ["site-1", "site-2", "site-3"]
    assert sorted(done["norms"].values())[-1] > 10 * sorted(done["norms"].values())[0]


def _resign_return(bundle: Path, key: Path, **changes: str) -> None:
    """Change the signed times of a return bundle, signed again with the site's key (as a site
    with a wrong clock, or an old bundle, would have signed them)."""
    import dataclasses

    from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME
    from manifests.keys import load_private
    from manifests.model import Manifest
    from manifests.signing import RETURN_PAYLOAD_TYPE, sign

    m = Manifest.from_bytes((bundle / MANIFEST_NAME).read_bytes())
    new = dataclasses.replace(m, bundle=dataclasses.replace(m.bundle, **changes)).to_bytes()
    (bundle / MANIFEST_NAME).write_bytes(new)
    (bundle / SIGNATURE_NAME).write_bytes(sign(new, [load_private(key)], RETURN_PAYLOAD_TYPE).to_bytes())


def test_expired_and_future_dated_return_bundles_are_refused_at_the_hub(tmp_path: Path) -> None:
    """The edge's rule for hub bundles, the other way round (docs/bundle-format.md §3.1, §13):
    --expires signs an expiry; the hub refuses the bundle from then on, and one dated ahead of
    its clock, naming the site, the bundle and whose clock looks wrong; the inventory unchanged."""
    from datetime import datetime, timedelta, timezone

    from manifests.bundle import MANIFEST_NAME
    from manifests.model import Manifest
    from manifests.root import format_time

    w = make_world(tmp_path, ("site-a",))
    spec = return_spec(tmp_path / "r.yaml", None)

    def export(name: str) -> Path:
        ok("return", "export", "--state", w.edges["site-a"], "--spec", spec, "--out", tmp_path / name,
           "--key", w.key("site-a"), "--expires", "30d")
        return tmp_path / name

    old, future, fresh = export("old"), export("future"), export("fresh")
    m = Manifest.from_bytes((fresh / MANIFEST_NAME).read_bytes())
    assert m.bundle.expires is not None and m.bundle.expires > m.bundle.created
    _resign_return(old, w.key("site-a"), created="2020-12-01T00:00:00Z", expires="2021-01-01T00:00:00Z")
    now = datetime.now(timezone.utc)
    _resign_return(future, w.key("site-a"), created=format_time(now + timedelta(days=2)),
                   expires=format_time(now + timedelta(days=30)))
    for bundle, says in ((old, "bundle expired at 2021-01-01T00:00:00Z"), (old, "ask the site for a fresh bundle"),
                         (future, "the site's clock looks ahead")):
        r = run_ferry("return", "import", bundle, "--hub", w.hub, "--json")
        assert_clean_failure(r, code=1, contains=says)
        assert f"{bundle}: return bundle of site site-a, sequence " in r.stderr
        assert not (w.hub / "sites" / "inventory.json").exists() or \
            json.loads(w.inventory())["sites"]["site-a"]["lastSequence"] == 0
    ok("return", "import", fresh, "--hub", w.hub)
    rec = json.loads(w.inventory())["sites"]["site-a"]
    assert rec["lastSequence"] == m.bundle.sequence and rec["lastCreated"] == m.bundle.created
    assert_clean_failure(run_ferry("return", "export", "--state", w.edges["site-a"], "--spec", spec, "--out",
                                   tmp_path / "x", "--key", w.key("site-a"), "--expires", "soon"),
                         code=2, contains="--expires 'soon' is not a duration")
def test_sites_shows_an_image_once_and_return_export_names_the_edge_state(tmp_path: Path) -> None:
    # found in review: `ferry sites` printed "team/sentiment-server:1.2.0 1.2.0" (an image's name is
    # its repository:tag), and `return export` said "hub state EDGE/return/writer" at the edge
    w = make_world(tmp_path, ("site-x",))
    edge = w.edges["site-x"]
    done = run_ferry("return", "export", "--state", edge, "--spec", return_spec(tmp_path / "r.yaml", None),
                     "--out", tmp_path / "ret", "--key", w.key("site-x"))
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert f"(edge state {edge / 'return' / 'writer'})" in said and "hub state" not in said
    ok("return", "import", tmp_path / "ret", "--hub", w.hub)
    text = ok("sites", "--hub", w.hub, "--html", tmp_path / "sites.html")
    assert "runs team/sentiment-server:1.2.0, sentiment-app 1.2.0, sentiment 1.2.0;" in text
    assert "1.2.0 1.2.0" not in text
    page = (tmp_path / "sites.html").read_text()
    assert "image team/sentiment-server:1.2.0<br>" in page and "1.2.0 1.2.0" not in page

    # a return export whose writer folder cannot be made names the edge state, not a hub state
    (edge / "return" / "writer").rename(edge / "return" / "writer.old")
    (edge / "return" / "writer").write_text("not a folder")
    again = run_ferry("return", "export", "--state", edge, "--spec", tmp_path / "r.yaml", "--out", tmp_path / "ret2",
                      "--key", w.key("site-x"))
    assert_clean_failure(again, code=2, contains=f"edge state {edge / 'return' / 'writer'}: cannot create")
    assert "hub state" not in again.stderr
    # a broken trail, and a damaged record of what was sent, are named as the edge state's
    (edge / "return" / "writer").unlink()
    (edge / "return" / "writer.old").rename(edge / "return" / "writer")
    (edge / "return" / "sent.json").write_text('{"auditNext": "x"}')
    sent = run_ferry("return", "export", "--state", edge, "--spec", tmp_path / "r.yaml", "--out", tmp_path / "ret3",
                     "--key", w.key("site-x"))
    assert_clean_failure(sent, code=2, contains=f"edge state {edge / 'return' / 'sent.json'}: auditNext")
    (edge / "return" / "sent.json").unlink()
    trail = edge / "audit" / "trail.jsonl"
    lines = trail.read_text().splitlines()
    lines[0] = lines[0].replace('"decision":"', '"decision":"x')
    trail.write_text("\n".join(lines) + "\n")
    broken = run_ferry("return", "export", "--state", edge, "--spec", tmp_path / "r.yaml", "--out", tmp_path / "ret3",
                       "--key", w.key("site-x"))
    assert_clean_failure(broken, code=2, contains=f"edge state {edge}: the audit trail is not whole")
    assert not (tmp_path / "ret3").exists()


def test_hub_commands_refuse_a_missing_hub_state_alike(tmp_path: Path) -> None:
    # return import and aggregate answered "no site keys registered" / "no pending updates" for a
    # mistyped --hub; sites and profile list said "no such hub state folder"
    missing = tmp_path / "no-such-hub"
    for args in (("return", "import", tmp_path, "--hub", missing),
                 ("aggregate", "sentiment", "--base", "1.2.0", "--version", "1.3.0", "--out", tmp_path / "o",
                  "--hub", missing),
                 ("sites", "--hub", missing)):
        assert_clean_failure(run_ferry(*args), code=2, contains=f"--hub {missing}: no such hub state folder")
    assert not missing.exists()


def test_sites_renders_whatever_a_site_reported_without_failing_or_injecting_markup(tmp_path: Path) -> None:
    # a site's status.json is its own word: odd shapes never fail `ferry sites`, and every string a
    # site supplied is escaped in the HTML report
    hub = tmp_path / "hub"
    (hub / "sites").mkdir(parents=True)
    evil = "<script>alert(1)</script>\x1b[2J\u202e"
    sites = {
        "site-a": {"keyid": "k1", "lastSequence": 3, "lastContact": "2026-01-01T00:00:00Z",
                   "status": {"installed": [{"kind": "image", "name": f"x/{evil}:1.0.0", "version": "1.0.0"},
                                            {"kind": "model", "name": evil, "version": f"\"'{evil}"}, "junk", 7],
                              "refusals": [{"time": evil, "reason": evil}, "junk", {"reason": "no time"}],
                              "channels": [evil]},
                   "updates": [], "drift": []},
        "site-b": {"keyid": "k2", "status": {"installed": 5, "refusals": {"a": 1}, "channels": "x"}},
        "site-c": {"keyid": "k3", "status": "not an object"},
    }
    (hub / "sites" / "inventory.json").write_text(json.dumps({"format": "ferry-hub-inventory", "formatVersion": "1.0",
                                                              "sites": sites}))
    text = ok("sites", "--hub", hub, "--html", tmp_path / "s.html")
    shown = "<script>alert(1)</script>\\u{001B}[2J\\u{202E}"  # the site's words, never an escape sequence
    assert f"runs x/{shown}:1.0.0, {shown} \"'{shown};" in text and "\x1b" not in text and "\u202e" not in text
    page = (tmp_path / "s.html").read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&quot;&#x27;" in page
    assert "\x1b" not in page and "\u202e" not in page and "\\u{202E}" in page
    doc = json.loads(ok("sites", "--hub", hub, "--json"))
    b = next(s for s in doc["sites"] if s["site"] == "site-b")
    assert b["runs"] == [] and b["edgeRefusals"] == [] and b["channels"] == {}


def test_hub_commands_refuse_a_missing_model_library_a_folder_to_write_and_odd_thresholds(tmp_path: Path) -> None:
    # hunting: `sites --models /typo` answered as for a library without references; `return import
    # --models /typo` failed only at the end and logged the typo as a refused return bundle;
    # `sites --html FOLDER` said ".FOLDER.tmp: Is a directory" and left that file behind;
    # `--threshold inf` wrote JSON with Infinity
    hub = tmp_path / "hub"
    hub.mkdir()
    missing = tmp_path / "no-models"
    for args in (("sites", "--hub", hub, "--models", missing),
                 ("return", "import", tmp_path, "--hub", hub, "--models", missing),
                 ("aggregate", "sentiment", "--base", "1.2.0", "--version", "1.3.0", "--out", tmp_path / "o",
                  "--hub", hub, "--models", missing)):
        assert_clean_failure(run_ferry(*args), code=2, contains=f"model library {missing}: not found")
    assert not (hub / "sites" / "refusals.jsonl").exists()
    (tmp_path / "report").mkdir()
    assert_clean_failure(run_ferry("sites", "--hub", hub, "--html", tmp_path / "report"), code=2,
                         contains=f"--html {tmp_path / 'report'}: is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "report"]  # no .report.tmp left behind
    for odd in ("inf", "nan", "0", "-1"):
        assert_clean_failure(run_ferry("sites", "--hub", hub, "--threshold", odd, "--json"), code=2,
                             contains="--threshold must be a number above 0")


def test_exclude_leaves_a_site_out_records_why_and_keeps_its_update_pending(tmp_path: Path) -> None:
    """Three sites return updates; the operator leaves site-3 out (with a reason): the new
    version is the mean of site-1 and site-2 only, provenance.json names site-3, its return
    bundle and the reason, and site-3's update stays pending: a later aggregation takes it."""
    w = make_world(tmp_path, ("site-1", "site-2", "site-3"))
    trained, digests = {}, {}
    for i, site in enumerate(("site-1", "site-2", "site-3"), start=1):
        trained[site] = train(tmp_path / f"{site}.safetensors", i)
        ok("return", "export", "--state", w.edges[site], "--spec",
           return_spec(tmp_path / f"{site}.yaml", tmp_path / f"{site}.safetensors", 100 * i), "--out",
           tmp_path / site, "--key", w.key(site))
        digests[site] = json.loads(ok("return", "import", tmp_path / site, "--hub", w.hub, "--models", w.models,
                                      "--json"))["digest"]
    agg = ("aggregate", "sentiment", "--base", "1.2.0", "--hub", w.hub, "--models", w.models)
    out = w.models / "sentiment" / "1.3.0"
    before = w.inventory()
    for extra, says in (
            (["--exclude", "site-9"], f"--exclude site-9: no such site in the hub inventory of --hub {w.hub} "
                                      "(sites: site-1, site-2, site-3)"),
            (["--exclude", "site-1", "--exclude", "site-2", "--exclude", "site-3=all broken"],
             "--exclude leaves out every site with a pending update of model sentiment from base 1.2.0 "
             "(site-1, site-2, site-3): nothing to aggregate"),
            (["--exclude", "site-1", "--exclude", "site-1=again"], "--exclude site-1: given twice"),
            (["--exclude", "=no site"], "--exclude '=no site': write SITE or SITE=REASON")):
        assert_clean_failure(run_ferry(*agg, "--version", "1.3.0", "--out", out, *extra), code=2, contains=says)
        assert w.inventory() == before and not out.exists()

    done = json.loads(ok(*agg, "--version", "1.3.0", "--out", out, "--exclude",
                         "site-3=loss diverged after its disk filled (ticket 42)", "--json"))
    assert done["sites"] == ["site-1", "site-2"] and done["examples"] == 300
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["formatVersion"] == "1.1" and [s["site"] for s in prov["sites"]] == ["site-1", "site-2"]
    assert prov["sites"][1]["weight"] == "200/300"
    assert prov["excluded"] == [{"site": "site-3", "reason": "loss diverged after its disk filled (ticket 42)",
                                 "updates": [{"sequence": 1, "bundle": digests["site-3"]}]}]
    got = read_tensors(out / "model.safetensors")
    for name, value in got.items():  # the mean of the two sites kept, weighted 100:200
        a, b = trained["site-1"][name], trained["site-2"][name]
        wide = np.float64 if a.dtype == np.float64 else np.float32
        np.testing.assert_array_equal(value, (a.astype(wide) * wide(100 / 300) + b.astype(wide) * wide(200 / 300))
                                      .astype(a.dtype), err_msg=name)

    pending = {s["site"]: s["pendingUpdates"] for s in json.loads(ok("sites", "--hub", w.hub, "--json"))["sites"]}
    assert pending["site-1"] == pending["site-2"] == [] and [u["bundle"] for u in pending["site-3"]] == [digests["site-3"]]
    # later: the update left out is still there to aggregate (here on its own); without a reason, null
    later = w.models / "sentiment" / "1.3.1"
    again = json.loads(ok(*agg, "--version", "1.3.1", "--out", later, "--exclude", "site-1", "--json"))
    assert again["sites"] == ["site-3"]
    assert json.loads((later / "provenance.json").read_text())["excluded"] == [
        {"site": "site-1", "reason": None, "updates": []}]
    assert all(not s["pendingUpdates"] for s in json.loads(ok("sites", "--hub", w.hub, "--json"))["sites"])
