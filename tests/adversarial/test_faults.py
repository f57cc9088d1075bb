"""Faults: kill -9 at random points during export and import, a full disk during import, and
read errors on the medium while import reads it.

After every fault the edge must be consistent (the audit chain is whole, ``ferry status``
answers, and every model's ``current`` holds exactly the bytes of the version it names, never
a partial one), and a rerun of the same command must succeed with exact results. The kill
points come from a seeded random generator, so a failure is reproducible from its seed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.edge import assert_refused
from tests.support import bundles
from tests.support.common import KeyPair, run_ferry
from tests.support.export import MiB, dir_size, make_model, write_spec

SEED = int(os.environ.get("FERRY_FAULT_SEED", "20261123"))


def ferry_until(args: list[Any], kill_when: Callable[[], bool], *, timeout: float = 120,
                preexec: Callable[[], None] | None = None,
                paused: Callable[[], bool] | None = None) -> tuple[bool, subprocess.CompletedProcess[str] | None]:
    """Run ferry; SIGKILL it as soon as ``kill_when()`` holds. Returns (killed, finished result).

    ``paused`` is polled too, with the child stopped (SIGSTOP) during the call, so a fault it
    injects lands while the child is mid-work, whatever the machine's load."""
    env = {k: v for k, v in os.environ.items() if k not in ("FERRY_KEY_PASSPHRASE", "FERRY_DEBUG")}
    proc = subprocess.Popen([sys.executable, "-m", "ferry", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec)
    deadline = time.monotonic() + timeout
    killed = False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if paused is not None:
                os.kill(proc.pid, signal.SIGSTOP)
                try:
                    paused()
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
            if kill_when():
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        out, err = proc.communicate()
    if killed and proc.returncode == -signal.SIGKILL:
        return True, None
    return False, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def after(seconds: float) -> Callable[[], bool]:
    start = time.monotonic()
    return lambda: time.monotonic() - start >= seconds


def size_reaches(path: Path, size: int) -> Callable[[], bool]:
    def reached() -> bool:
        try:
            return path.exists() and dir_size(path) >= size
        except (FileNotFoundError, NotADirectoryError):
            return False
    return reached


def assert_consistent(edge: Path, versions: dict[str, dict[str, dict[str, bytes]]]) -> None:
    """The edge after a fault: audit chain whole, status answers, and each model's ``current``
    names a version whose files are exactly that version's (never partial, never mixed)."""
    if not (edge / "state.db").exists():
        return
    r = run_ferry("audit", "verify", "--state", edge)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_ferry("status", "--state", edge)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    for name, by_version in versions.items():
        current = edge / "models" / name / "current"
        if not current.exists():
            continue
        version = os.readlink(current).rstrip("/").split("/")[-1]
        files = {p.relative_to(current).as_posix(): p.read_bytes() for p in current.rglob("*") if p.is_file()}
        assert files == by_version[version], f"{name} current -> {version} is not exactly that version"


# --------------------------------------------------------------------------- kill -9 during export


def test_export_killed_at_random_points_then_rerun_is_exact(tmp_path: Path, hub_keys: KeyPair) -> None:
    rng = random.Random(SEED)
    make_model(tmp_path / "m", count=12, size=4 * MiB, seed=SEED % 1000)
    spec = write_spec(tmp_path / "bundle.yaml", [("big", "2.0.0", "m")])
    out = tmp_path / "out"
    args = ["export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp_path / "hub",
            "--max-volume-size", "20MiB"]
    total = dir_size(tmp_path / "m")
    kills = 0
    for attempt in range(4):
        fraction = rng.uniform(0.02, 0.98)
        killed, result = ferry_until(args, size_reaches(out, int(total * fraction)))
        if not killed:
            assert result is not None and result.returncode == 0, result and result.stderr
            break
        kills += 1
        # a killed export never leaves something that looks like a finished bundle
        assert not any(out.rglob("manifest.json")) or (out / ".ferry-export").exists()
    r = run_ferry(*args)
    assert r.returncode == 0, r.stderr
    assert kills >= 1, "no kill landed: the export finished before every chosen point"
    print(f"export: {kills} kills landed")
    assert not list(out.rglob("*.tmp")) and not (out / ".ferry-export").exists()
    edge = tmp_path / "edge"
    r = run_ferry("import", out, "--trust", hub_keys.pub, "--state", edge)
    assert r.returncode == 0, r.stderr
    for name in ("model.safetensors", "config.json"):
        assert (edge / "models" / "big" / "current" / name).read_bytes() == (tmp_path / "m" / name).read_bytes()


# --------------------------------------------------------------------------- kill -9 during import


def _models(version: str, seed: int, mib: int = 6) -> dict[str, dict[str, bytes]]:
    rng = random.Random(seed)
    return {f"m{i}": {"weights.bin": rng.randbytes(mib * MiB), "config.json": b'{"v": "%s"}' % version.encode()}
            for i in range(3)}


def _write(out: Path, key: Path, models: dict[str, dict[str, bytes]], version: str, sequence: int) -> Path:
    bundles.write_bundle(out, [key], [bundles.model(n, version, f) for n, f in models.items()],
                         sequence=sequence, bundle_id=f"faults-{sequence}", chunk_size=1 * MiB, volumes=1)
    return out


def _assert_installed(edge: Path, models: dict[str, dict[str, bytes]], version: str) -> None:
    for name, files in models.items():
        current = edge / "models" / name / "current"
        assert os.readlink(current).rstrip("/").split("/")[-1] == version
        got = {p.relative_to(current).as_posix(): p.read_bytes() for p in current.rglob("*") if p.is_file()}
        assert got == files, f"{name} {version} is not exactly what was sent"


def test_import_killed_at_random_points_then_rerun_is_exact(tmp_path: Path, hub_keys: KeyPair) -> None:
    """Fresh install then an upgrade, each killed at several random points (by time and by
    bytes written); after each kill the edge is consistent; the rerun installs exactly."""
    rng = random.Random(SEED + 1)
    v1, v2 = _models("1.0.0", SEED), _models("2.0.0", SEED + 7)
    b1 = _write(tmp_path / "b1", hub_keys.key, v1, "1.0.0", 1)
    b2 = _write(tmp_path / "b2", hub_keys.key, v2, "2.0.0", 2)
    edge = tmp_path / "edge"
    versions = {n: {"1.0.0": v1[n], "2.0.0": v2[n]} for n in v1}
    total = sum(len(b) for files in v1.values() for b in files.values())
    kills = 0
    for phase, (bundle, version) in enumerate(((b1, "1.0.0"), (b2, "2.0.0"))):
        args = ["import", bundle, "--trust", hub_keys.pub, "--state", edge]
        final = total * (phase + 1)  # bytes under EDGE/models once this phase is done
        for attempt in range(3):
            if attempt == 2:  # early in a resumed run: opening the state, recovery, verification
                when = after(rng.uniform(0.2, 0.6))
            else:  # while writing: at a random fraction of what is left to write
                base = dir_size(edge / "models") if (edge / "models").exists() else 0
                when = size_reaches(edge / "models", base + int((final - base) * rng.uniform(0.05, 0.9)))
            killed, result = ferry_until(args, when)
            if not killed:
                assert result is not None and result.returncode == 0, result and result.stderr
                break
            kills += 1
            assert_consistent(edge, versions)
        r = run_ferry(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        _assert_installed(edge, v1 if version == "1.0.0" else v2, version)
        assert_consistent(edge, versions)
    assert kills >= 2, "too few kills landed inside the imports"
    print(f"import: {kills} kills landed")
    # the old version is kept, byte for byte, beside the new current
    for name, files in v1.items():
        old = edge / "models" / name / "1.0.0"
        assert {p.relative_to(old).as_posix(): p.read_bytes() for p in old.rglob("*") if p.is_file()} == files


# --------------------------------------------------------------------------- full disk during import


@pytest.fixture()
def small_fs(tmp_path: Path) -> Any:
    """Mount a tmpfs of the asked size (we run as root in CI); None when mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size_mib: int) -> Path | None:
        mnt = tmp_path / f"fs-{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mnt)],
                           capture_output=True)
        if r.returncode != 0:
            return None
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fsize_limit(limit: int) -> Callable[[], None]:
    """Child-side fallback when no file system can be mounted: writes past ``limit`` bytes
    fail with EFBIG (SIGXFSZ ignored) as a full disk would fail them with ENOSPC."""
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_before_import_is_refused_from_the_free_space(tmp_path: Path, hub_keys: KeyPair,
                                                                small_fs: Any) -> None:
    models = _models("1.0.0", SEED, mib=8)
    bundle = _write(tmp_path / "b", hub_keys.key, models, "1.0.0", 1)
    mnt = small_fs(20)
    if mnt is None:  # cannot mount here: a size-limited write path stands in for the small disk
        edge = tmp_path / "edge"
        _killed, r = ferry_until(["import", bundle, "--trust", hub_keys.pub, "--state", edge], lambda: False,
                                 preexec=_fsize_limit(2 * MiB))
        assert r is not None
        assert_refused(r)
        assert_consistent(edge, {n: {"1.0.0": f} for n, f in models.items()})
        return
    edge = mnt / "edge"
    r = run_ferry("import", bundle, "--trust", hub_keys.pub, "--state", edge)
    assert_refused(r, contains="space")
    assert not (edge / "models").exists() or not any((edge / "models").rglob("*"))
    assert_consistent(edge, {})


def test_disk_filling_up_during_import_leaves_a_consistent_state(tmp_path: Path, hub_keys: KeyPair,
                                                                 small_fs: Any) -> None:
    """The free-space check passes, then the disk fills up while the models are written (a
    filler takes every free byte): one clear error, consistent state, rerun exact once space
    is back."""
    models = _models("1.0.0", SEED, mib=8)
    bundle = _write(tmp_path / "b", hub_keys.key, models, "1.0.0", 1)
    versions = {n: {"1.0.0": f} for n, f in models.items()}
    mnt = small_fs(96)
    args = ["import", bundle, "--trust", hub_keys.pub]
    if mnt is None:
        edge = tmp_path / "edge"
        killed, r = ferry_until([*args, "--state", edge], lambda: False, preexec=_fsize_limit(3 * MiB))
        assert r is not None
        assert_refused(r)
        assert_consistent(edge, versions)
        r = run_ferry(*args, "--state", edge)
        assert r.returncode == 0, r.stderr
        _assert_installed(edge, models, "1.0.0")
        return
    edge = mnt / "edge"
    filler = mnt / "filler"

    def fill_when_writing() -> bool:
        if filler.exists() or not (edge / "models").exists() or dir_size(edge / "models") < MiB:
            return False
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)  # take every free byte, racing the import
        block = b"\0" * MiB
        try:
            for _ in range(3):  # instant on tmpfs; the import may take space between the two calls
                try:
                    os.posix_fallocate(fd, 0, max(shutil.disk_usage(mnt).free - MiB, 1))
                    break
                except OSError:
                    continue
            while block:
                try:
                    os.write(fd, block)
                except OSError:
                    block = block[: len(block) // 2]
        finally:
            os.close(fd)
        return False  # never kill: the import must meet the full disk itself

    _killed, r = ferry_until([*args, "--state", edge], lambda: False, paused=fill_when_writing)
    assert r is not None
    assert filler.exists(), "the import finished before the disk could be filled"
    assert_refused(r, contains="space")
    print(f"full disk: {r.stderr.strip()}")
    filler.unlink()
    assert_consistent(edge, versions)
    r = run_ferry(*args, "--state", edge)
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_installed(edge, models, "1.0.0")
    assert_consistent(edge, versions)


# --------------------------------------------------------------------------- read errors on the medium


@pytest.mark.parametrize("fault", ["truncated-mid-read", "replaced-by-folder-mid-read"])
def test_medium_read_error_during_import(fault: str, tmp_path: Path, hub_keys: KeyPair) -> None:
    """The pack changes under the running import (a disk pulled or failing): the import either
    finished before, or fails cleanly; the edge is consistent; with the medium back, the rerun
    installs exactly."""
    rng = random.Random(f"{SEED}-{fault}")
    models = _models("1.0.0", SEED, mib=8)
    versions = {n: {"1.0.0": f} for n, f in models.items()}
    pristine = _write(tmp_path / "pristine", hub_keys.key, models, "1.0.0", 1)
    medium = tmp_path / "medium"
    shutil.copytree(pristine, medium)
    pack = next((medium / "packs").iterdir())
    edge = tmp_path / "edge"
    args = ["import", medium, "--trust", hub_keys.pub, "--state", edge]
    total = sum(len(b) for files in models.values() for b in files.values())
    threshold = int(total * rng.uniform(0.1, 0.6))
    done = []

    def break_medium() -> bool:
        if not done and size_reaches(edge / "models", threshold)():
            if fault == "truncated-mid-read":
                os.truncate(pack, pack.stat().st_size // 3)
            else:
                pack.rename(tmp_path / "gone.pack")
                pack.mkdir()
            done.append(True)
        return False

    _killed, r = ferry_until(args, lambda: False, paused=break_medium)
    assert r is not None
    assert done, "the import finished before the medium could be broken"
    print(f"{fault}: import exit {r.returncode}: {r.stderr.strip()}")
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    if done and r.returncode != 0:
        assert_refused(r)
    assert_consistent(edge, versions)
    shutil.rmtree(medium)
    shutil.copytree(pristine, medium)
    r = run_ferry(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_installed(edge, models, "1.0.0")
    assert_consistent(edge, versions)
