"""``ferry watch`` (issue #18 item 3): a drop folder filled slowly, volume by volume, is imported
exactly once and never half-written; a file that keeps changing is waited for; a registry
channel's new tags are imported in order; SIGTERM ends it cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.common import REPO, run_ferry
from tests.support.export import MiB, make_model, urandom_model, write_spec


def _export(tmp: Path, name: str, model: Path, version: str, keys, *extra: object) -> Path:  # noqa: ANN001
    spec = write_spec(tmp / f"{name}.yaml", [("m", version, str(model))])
    out = tmp / name
    r = run_ferry("export", spec, "--out", out, "--key", keys.key, "--state", tmp / "hub", *extra)
    assert r.returncode == 0, r.stderr
    return out


def _trail(state: Path) -> list[dict]:
    r = run_ferry("audit", "export", "--state", state, "--out", state.parent / "audit.json")
    assert r.returncode == 0, r.stderr
    return json.loads((state.parent / "audit.json").read_text())["entries"]


def _copy_slowly(src: Path, dst: Path, piece: int = 1 << 20, pause: float = 0.05) -> None:
    """Copy a file in pieces, as a slow diode or courier would."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while data := fin.read(piece):
            fout.write(data)
            fout.flush()
            time.sleep(pause)


def test_a_bundle_copied_in_slowly_volume_by_volume_is_imported_exactly_once(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    bundle = _export(tmp_path, "b", urandom_model(tmp_path / "src", 24), "1.0.0", hub_keys, "--max-volume-size", "18M")
    vols = sorted(p.name for p in bundle.iterdir() if p.name.startswith("vol-"))
    assert len(vols) >= 2
    drop, state = tmp_path / "drop", tmp_path / "edge"
    drop.mkdir()
    watcher = subprocess.Popen([sys.executable, "-m", "ferry", "watch", str(drop), "--trust", str(hub_keys.pub),
                                "--state", str(state), "--interval", "0.2", "--settle", "0.5"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        target = drop / "edge-ai"
        for vol in vols:  # manifest and signature first, as a plain cp -r would not guarantee; packs slowly
            src = bundle / vol
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    _copy_slowly(f, target / vol / f.relative_to(src))
            time.sleep(0.3)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            last = json.loads((state / "watch.json").read_text()).get("last") if (state / "watch.json").exists() else None
            if last and "imported" in last["outcome"]:
                break
            time.sleep(0.2)
        time.sleep(1.5)  # a few more polls: it must not import again
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    assert "Traceback" not in err
    entries = _trail(state)
    applied = [e for e in entries if e["decision"] == "applied"]
    assert len(applied) == 1 and applied[0]["artifact"]["name"] == "m"  # once
    picked = [e for e in entries if e["decision"] == "watch" and "imported (exit 0)" in e["reason"]]
    assert len(picked) == 1
    refused = [e for e in entries if e["decision"] == "refused"]
    assert refused == []  # never tried on a half-written bundle
    model = next((state / "models" / "m").rglob("model.safetensors"))
    assert model.read_bytes() == (tmp_path / "src" / "model.safetensors").read_bytes()
    r = run_ferry("status", "--state", state)
    assert "watch: last result" in r.stdout and "imported (exit 0)" in r.stdout


def test_a_file_that_keeps_changing_is_waited_for(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    bundle = _export(tmp_path, "b", make_model(tmp_path / "src", count=2, size=64 * 1024), "1.0.0", hub_keys)
    drop, state = tmp_path / "drop", tmp_path / "edge"
    shutil.copytree(bundle, drop / "b")
    stop = threading.Event()

    def scribble() -> None:  # a stray file in the bundle folder that never stops growing
        with open(drop / "b" / "notes.txt", "ab") as f:
            while not stop.is_set():
                f.write(b"x")
                f.flush()
                time.sleep(0.05)

    t = threading.Thread(target=scribble)
    t.start()
    try:
        r = run_ferry("watch", drop, "--trust", hub_keys.pub, "--state", state, "--once", "--settle", "0.5")
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    reasons = [e["reason"] for e in _trail(state) if e["decision"] == "watch"]
    assert any("still changing" in why for why in reasons), reasons
    assert not (state / "models").exists()
    r = run_ferry("watch", drop, "--trust", hub_keys.pub, "--state", state, "--once", "--settle", "0.3")
    assert r.returncode == 0, r.stderr
    # its decisions are its log, on stderr though it is no terminal (cron, a pod's log): found
    # walking the guide, `watch --once` from a script printed only "watch: done"
    said = [line for line in r.stderr.splitlines() if line.startswith("watch: ")]
    assert any(line.endswith(": imported (exit 0)") for line in said), r.stderr
    assert any((state / "models" / "m").rglob("model.safetensors"))  # once it settled


def test_a_registry_channel_imports_new_tags_in_order(tmp_path: Path, registry, hub_keys) -> None:  # noqa: ANN001
    channel = f"oci://{registry.host}/watch/{tmp_path.name[-10:].lower().replace('_', '-')}"
    for version, seed in (("1.0.0", 1), ("1.1.0", 2)):
        _export(tmp_path, f"b{seed}", make_model(tmp_path / f"src{seed}", count=2, size=128 * 1024, seed=seed),
                version, hub_keys, "--push", channel)
    state = tmp_path / "edge"
    r = run_ferry("watch", channel, "--trust", hub_keys.pub, "--state", state, "--once")
    assert r.returncode == 0, r.stderr
    entries = _trail(state)
    applied = [e["versionAfter"] for e in entries if e["decision"] == "applied"]
    assert applied == ["1.0.0", "1.1.0"]  # sequence order
    assert json.loads((state / "watch.json").read_text())["lastTag"] == 2
    r = run_ferry("watch", channel, "--trust", hub_keys.pub, "--state", state, "--once")
    assert r.returncode == 0
    assert len(_trail(state)) == len(entries)  # nothing new: nothing fetched, nothing said


def test_watch_refuses_bad_sources_with_one_line(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    from tests.support.common import assert_clean_failure

    assert_clean_failure(run_ferry("watch", tmp_path / "nope", "--trust", hub_keys.pub, "--state", tmp_path / "e"),
                         code=2, contains=f"drop folder {tmp_path / 'nope'}: not found")
    assert_clean_failure(run_ferry("watch", "oci://127.0.0.1:1/a/b:3", "--trust", hub_keys.pub, "--state",
                                   tmp_path / "e"), code=2, contains="not one tag")
    assert_clean_failure(run_ferry("watch", "oci://127.0.0.1:1/a/b", "--trust", hub_keys.pub, "--state",
                                   tmp_path / "e", "--once"), code=2, contains="unreachable")
    tmp_path.joinpath("drop").mkdir()
    for option, value in (("--settle", "inf"), ("--interval", "inf"), ("--interval", "nan"), ("--settle", "nan"),
                          ("--interval", "0"), ("--settle", "-1")):  # inf overflowed the clock: exit 70
        assert_clean_failure(run_ferry("watch", tmp_path / "drop", "--trust", hub_keys.pub, "--state", tmp_path / "e",
                                       "--once", option, value, timeout=60), code=2, contains="--interval must be")


def test_a_bad_trust_is_refused_before_the_drop_folder_is_looked_at(tmp_path: Path) -> None:
    # found trying watch with a mistyped --trust: it first wrote "seen; waiting" entries for every
    # entry of the drop folder into a new edge state's audit trail, then failed
    from tests.support.common import assert_clean_failure

    drop, state = tmp_path / "drop", tmp_path / "edge"
    (drop / "junk").mkdir(parents=True)
    (drop / "junk" / "manifest.json").write_text("{}")
    assert_clean_failure(run_ferry("watch", drop, "--trust", tmp_path / "hub.pub", "--state", state, "--once"),
                         code=2, contains=f"trust file {tmp_path / 'hub.pub'}: not found")
    assert_clean_failure(run_ferry("watch", drop, "--state", state, "--once"), code=2, contains="no --trust given")
    assert not state.exists()


def test_the_sample_deployment_and_cronjob_are_valid_kubernetes_objects() -> None:
    import yaml
    from kubernetes.client import ApiClient

    docs = [d for f in ("deployment.yaml", "cronjob.yaml")
            for d in yaml.safe_load_all((REPO / "samples" / "watch" / f).read_text()) if d]
    assert {d["kind"] for d in docs} == {"Deployment", "ServiceAccount", "CronJob"}
    for d in docs:  # the client's typed models: wrong types and missing required fields raise
        model = ApiClient()._ApiClient__deserialize(d, d["apiVersion"].split("/")[-1].capitalize() + d["kind"])
        assert type(model).__name__ == "V1" + d["kind"]
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"] + \
        [d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in docs if d["kind"] == "CronJob"]
    for pod in pods:
        (c,) = pod["containers"]
        assert "--state" in c["args"] and "--trust" in c["args"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    cron = next(d for d in docs if d["kind"] == "CronJob")
    assert "--once" in cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_junk_in_the_drop_folder_waits_in_one_line_each_and_the_bundle_beside_it_imports(tmp_path: Path,
                                                                                         hub_keys) -> None:  # noqa: ANN001
    # hunting with junk: each entry is said once, named once, and never stops the bundle beside it
    model = tmp_path / "model"
    make_model(model, count=1, size=64 * 1024)
    good = _export(tmp_path, "good", model, "1.0.0", hub_keys)
    drop, state = tmp_path / "drop", tmp_path / "edge"
    shutil.copytree(good, drop / "good")
    (drop / "junk").mkdir()
    (drop / "junk" / "x.bin").write_bytes(os.urandom(1000))
    (drop / "garbage").mkdir()
    (drop / "garbage" / "manifest.json").write_text('{"a":')
    (drop / "fifo").mkdir()
    os.mkfifo(drop / "fifo" / "manifest.json")  # must never hang the watcher
    (drop / "loop").mkdir()
    (drop / "loop" / "self").symlink_to("../loop")
    (drop / "new\nline").mkdir()
    shutil.copytree(good, drop / "cut")
    pack = next((drop / "cut" / "packs").iterdir())
    pack.write_bytes(pack.read_bytes()[:10])
    (drop / "a-file").write_text("not a folder")
    r = run_ferry("watch", drop, "--trust", hub_keys.pub, "--state", state, "--once", "--settle", "0", timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    waits = {e["reason"].split(": waiting: ")[0]: e["reason"].split(": waiting: ")[1]
             for e in _trail(state) if e["decision"] == "watch" and ": waiting: " in e["reason"]}
    assert set(waits) == {str(drop / n) for n in ("junk", "garbage", "fifo", "loop", "new\nline", "cut")}
    assert all(not why.startswith(str(drop)) for why in waits.values()), waits  # the entry is named once
    assert "not a regular file" in waits[str(drop / "fifo")]
    assert "is 10 of" in waits[str(drop / "cut")]
    status = json.loads(run_ferry("status", "--state", state, "--json").stdout)
    assert [a["name"] for a in status["installed"]] == ["m"] and status["watch"]["outcome"].endswith("imported (exit 0)")
    assert run_ferry("audit", "verify", "--state", state).returncode == 0


def test_an_edge_state_kept_in_the_drop_folder_is_no_candidate(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    # hunting: with --state inside the drop folder, every run logged the state as "seen" and
    # "files are still changing" (its own audit trail grew as it looked)
    model = tmp_path / "model"
    make_model(model, count=1, size=64 * 1024)
    drop = tmp_path / "drop"
    shutil.copytree(_export(tmp_path, "good", model, "1.0.0", hub_keys), drop / "good")
    for _ in range(2):
        r = run_ferry("watch", drop, "--trust", hub_keys.pub, "--state", drop / "edge", "--once", "--settle", "0")
        assert r.returncode == 0, r.stderr
    said = [e["reason"] for e in _trail(drop / "edge") if e["decision"] == "watch"]
    assert said and not any(str(drop / "edge") in reason for reason in said), said
