"""What the operator sees (issue #12 items 3 and 4), on the real command line: one-line usage
errors, locks that name their holder, Ctrl-C that says what was kept, errors that name the right
place, and import/status/receipt output that says what happened."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.export import ExportOptions, export, lock_medium
from bundler.hubstate import HubState
from manifests.progress import Silent
from importer.state import EdgeState
from manifests.errors import PlaceError
from manifests.locking import Holder, acquire
from tests.support.common import REPO, SAMPLES, KeyPair, assert_clean_failure, run_ferry
from tests.support.export import assert_failure_after_progress, make_model, write_spec


def _spec(tmp: Path) -> Path:
    make_model(tmp / "m", count=2, size=256 * 1024)
    return write_spec(tmp / "bundle.yaml", [("sentiment", "1.0.0", "m")])


def _export(spec: Path, out: Path, keys: KeyPair, hub: Path, *extra: object) -> subprocess.CompletedProcess[str]:
    return run_ferry("export", spec, "--out", out, "--key", keys.key, "--state", hub, *extra)


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args, contains", [
    (("import", "somewhere"), "import: Missing option '--state'"),  # --trust may come from the pinned policy
    (("export",), "export: Missing argument"),
    (("verify", "x", "--trust", "k", "--bogus"), "No such option: --bogus"),
    (("frobnicate",), "No such command 'frobnicate'"),
])
def test_usage_errors_are_one_line_exit_2(args: tuple[str, ...], contains: str) -> None:
    r = run_ferry(*args)
    assert_clean_failure(r, code=2, contains=contains)
    assert r.stderr.startswith("ferry: error: ") and "╭" not in r.stderr and "Usage:" not in r.stderr


def test_help_is_kept() -> None:
    r = run_ferry("import", "--help")
    assert r.returncode == 0 and "Usage:" in r.stdout and "--trust" in r.stdout


# --------------------------------------------------------------------------- locks


def test_holder_record_round_trips() -> None:
    me = Holder.me()
    assert Holder.from_bytes(me.to_bytes()) == me
    assert Holder.from_bytes(b"4242\n") == Holder(4242, "?", "?", "?")  # the edge's older record
    assert Holder.from_bytes(b"\xff{garbage") is None


def test_second_export_with_the_same_hub_state_is_refused_naming_the_holder(tmp_path: Path,
                                                                           hub_keys: KeyPair) -> None:
    spec = _spec(tmp_path)
    holder = HubState(tmp_path / "hub")
    holder.lock()  # as a running export does
    try:
        r = _export(spec, tmp_path / "usb", hub_keys, tmp_path / "hub")
        assert_clean_failure(r, code=2, contains=f"hub state {tmp_path / 'hub'} is in use by another ferry export")
        assert f"pid {os.getpid()} on {socket.gethostname()}" in r.stderr and "since " in r.stderr
        assert not (tmp_path / "usb").exists()  # the refused run left nothing on the medium
    finally:
        holder.close()
    assert _export(spec, tmp_path / "usb", hub_keys, tmp_path / "hub").returncode == 0


def test_second_export_into_the_same_medium_is_refused_naming_the_holder(tmp_path: Path,
                                                                         hub_keys: KeyPair) -> None:
    spec = _spec(tmp_path)
    out = tmp_path / "usb"
    held = lock_medium(out)  # another export writing this folder (its own hub state)
    try:
        r = _export(spec, out, hub_keys, tmp_path / "hub")
        assert_clean_failure(r, code=2, contains=f"--out {out} is in use by another ferry export")
        assert f"pid {os.getpid()}" in r.stderr
        assert "cannot read" not in r.stderr  # never a source error for a medium one
    finally:
        held.release()
    r = _export(spec, out, hub_keys, tmp_path / "hub")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "manifest.json.sig", "packs"]  # no lock left


def test_edge_lock_names_the_holder(sample_bundle: Path, tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    holder = EdgeState.open(state)
    try:
        r = run_ferry("import", sample_bundle, "--trust", hub_keys.pub, "--state", state)
        assert_clean_failure(r, code=2, contains="in use by another ferry import")
        assert f"pid {os.getpid()} on {socket.gethostname()}" in r.stderr
    finally:
        holder.close()


def test_a_lock_that_cannot_be_taken_names_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    with pytest.raises(PlaceError) as err:
        acquire(folder, "lock", place="state", label=f"--state {folder}", what="import")
    assert err.value.place == "state" and str(folder) in str(err.value) and "lock" in str(err.value)


def test_medium_write_error_names_the_medium_not_the_source(tmp_path: Path, hub_keys: KeyPair,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from bundler import packs

    def full(fd: int, frame: bytes, *_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(packs.PackWriter, "_write", staticmethod(full))
    spec = _spec(tmp_path)
    with pytest.raises(PlaceError) as err:
        export(ExportOptions(spec=spec, out=tmp_path / "usb", keys=(hub_keys.key,), state=tmp_path / "hub"), Silent())
    assert err.value.place == "medium"
    assert str(err.value).startswith(f"--out {tmp_path / 'usb'}: cannot write") and "no space left" in str(err.value)
    assert "model.safetensors" not in str(err.value)


_UNREADABLE = """
import builtins, errno, os, sys
real_open, real_os_open = builtins.open, os.open
def refuse(path):
    if str(path).endswith("model.safetensors"):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
def fake_open(path, *a, **k):
    refuse(path)
    return real_open(path, *a, **k)
def fake_os_open(path, *a, **k):
    refuse(path)
    return real_os_open(path, *a, **k)
builtins.open, os.open = fake_open, fake_os_open
sys.argv = ["ferry", *sys.argv[1:]]
from ferry.cli import main
main()
"""


def test_source_read_error_names_the_source(tmp_path: Path, hub_keys: KeyPair) -> None:
    """A source file that cannot be read (EACCES, injected so it also fails for root, who reads
    any file) is named as the source, never as the medium."""
    spec = _spec(tmp_path)
    args = ["export", str(spec), "--out", str(tmp_path / "usb"), "--key", str(hub_keys.key),
            "--state", str(tmp_path / "hub")]
    r = subprocess.run([sys.executable, "-c", _UNREADABLE, *args], capture_output=True, text=True, cwd=REPO)
    assert_failure_after_progress(r, "model.safetensors")
    assert "--out" not in r.stderr.splitlines()[-1]


# --------------------------------------------------------------------------- Ctrl-C

_INTERRUPT = """
import sys
import ferry.ui as ui
real = ui.UI.task
from contextlib import contextmanager
@contextmanager
def task(self, description, total):
    with real(self, description, total) as t:
        if description.startswith("model"):
            raise KeyboardInterrupt  # as Ctrl-C lands while the model is being cut
        yield t
ui.UI.task = task
from ferry.cli import main
sys.argv = ["ferry", *sys.argv[1:]]
main()
"""


def test_ctrl_c_during_export_says_what_was_kept_and_the_same_command_resumes(tmp_path: Path,
                                                                              hub_keys: KeyPair) -> None:
    spec = _spec(tmp_path)
    out = tmp_path / "usb"
    args = ["export", str(spec), "--out", str(out), "--key", str(hub_keys.key), "--state", str(tmp_path / "hub")]
    r = subprocess.run([sys.executable, "-c", _INTERRUPT, *args], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 130, r.stderr
    last = [line for line in r.stderr.splitlines() if line.strip()][-1]
    assert last == (f"ferry: error: export interrupted: nothing finished yet in --out {out}; "
                    "run the same command to resume"), r.stderr
    assert "Traceback" not in r.stderr
    again = run_ferry(*args)
    assert again.returncode == 0, again.stderr
    assert run_ferry("verify", out, "--trust", hub_keys.pub).returncode == 0


def test_ctrl_c_during_import_says_what_was_kept_and_the_same_command_resumes(sample_bundle: Path, tmp_path: Path,
                                                                              hub_keys: KeyPair) -> None:
    edge = tmp_path / "edge"
    args = ["import", str(sample_bundle), "--trust", str(hub_keys.pub), "--state", str(edge)]
    r = subprocess.run([sys.executable, "-c", _INTERRUPT, *args], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 130, r.stderr
    assert_clean_failure(r, code=130, contains=f"import interrupted: what was verified, stored and applied so far "
                                               f"is kept in --state {edge}")
    assert "run the same command to resume" in r.stderr
    again = run_ferry(*args)
    assert again.returncode == 0, again.stderr
    assert "model sentiment 1.2.0: applied" in again.stdout


# --------------------------------------------------------------------------- messages and output


@pytest.fixture(scope="module")
def sample_bundle(tmp_path_factory: pytest.TempPathFactory, hub_keys: KeyPair) -> Path:
    tmp = tmp_path_factory.mktemp("operator")
    r = run_ferry("export", SAMPLES / "bundle.yaml", "--out", tmp / "usb", "--key", hub_keys.key,
                  "--state", tmp / "hub")
    assert r.returncode == 0, r.stderr
    assert f"hub state {tmp / 'hub'}" in r.stdout
    return tmp / "usb"


def test_export_without_state_warns_which_default_it_uses(tmp_path: Path, hub_keys: KeyPair) -> None:
    spec = _spec(tmp_path)
    r = run_ferry("export", spec, "--out", tmp_path / "usb", "--key", hub_keys.key,
                  env={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert r.returncode == 0, r.stderr
    assert f"warning: no --state given: using the default hub state {tmp_path / 'xdg' / 'ferry'}" in r.stderr
    assert f"hub state {tmp_path / 'xdg' / 'ferry'} (the default)" in r.stdout


def test_import_without_registry_says_where_the_image_went(sample_bundle: Path, hub_keys: KeyPair,
                                                           tmp_path: Path) -> None:
    edge = tmp_path / "edge"
    r = run_ferry("import", sample_bundle, "--trust", hub_keys.pub, "--state", edge)
    assert r.returncode == 0, r.stderr
    (image,) = [line for line in r.stdout.splitlines() if line.strip().startswith("image ")]
    assert "-> EDGE/oci (no --registry; workloads pinned to registry.example:5000/team/sentiment-server@sha256:" in image
    assert "not installed" not in r.stdout

    status = run_ferry("status", "--state", edge)
    assert status.returncode == 0, status.stderr
    assert "…" not in status.stdout  # ids and refs are never cut
    flat = "".join(status.stdout.split())
    ref = image.split("pinned to ")[1].rstrip(")")
    assert ref in flat.replace("│", "")
    assert "EDGE/oci(" in flat  # the layout's size, not "-"
    wide = run_ferry("status", "--state", edge, "--wide")
    assert any(ref in line for line in wide.stdout.splitlines())

    receipt = run_ferry("receipt", "--state", edge, "--out", tmp_path / "r.json")
    assert receipt.returncode == 0, receipt.stderr
    assert "3 artifact(s)" in receipt.stderr and "chunk id(s) held" in receipt.stderr and "1 channel(s)" in receipt.stderr


def test_untrusted_key_refusal_names_the_bundle_and_the_trusted_keys(sample_bundle: Path, other_keys: KeyPair,
                                                                     tmp_path: Path) -> None:
    r = run_ferry("import", sample_bundle, "--trust", other_keys.pub, "--state", tmp_path / "edge")
    assert_clean_failure(r, code=1, contains=f"bundle {sample_bundle}")
    assert f"trusted key id(s): {other_keys.keyid}" in r.stderr


def test_rates_are_in_iec_units() -> None:
    from types import SimpleNamespace

    from ferry.ui import _RateColumn

    text = _RateColumn().render(SimpleNamespace(finished_speed=None, speed=3 * 2**20))  # type: ignore[arg-type]
    assert text.plain == "3.0 MiB/s"
