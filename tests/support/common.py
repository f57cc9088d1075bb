"""Fixtures every area uses: running the real CLI, and a hub key pair."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
KUBESTELLAR_EXAMPLES = Path(__file__).parent / "kubestellar" / "examples"


def run_ferry(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None,
              timeout: float = 300, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``ferry`` CLI in a subprocess (as an operator would), capturing output."""
    full_env = {k: v for k, v in os.environ.items() if k != "FERRY_KEY_PASSPHRASE"}
    full_env.pop("FERRY_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ferry", *map(str, args)],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout, input=input,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], *, code: int | None = None,
                         contains: str | None = None) -> None:
    """A refusal as users must see it: non-zero exit, one line on stderr, no traceback."""
    assert result.returncode != 0, f"expected failure, got 0\nstdout={result.stdout}\nstderr={result.stderr}"
    if code is not None:
        assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    if contains is not None:
        assert contains.lower() in result.stderr.lower(), result.stderr


@dataclass
class KeyPair:
    key: Path
    pub: Path
    keyid: str


@pytest.fixture(scope="session")
def hub_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    from manifests.keys import generate

    out = tmp_path_factory.mktemp("keys")
    key, pub, kid = generate("hub", out)
    return KeyPair(key, pub, kid)


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    from manifests.keys import generate

    out = tmp_path_factory.mktemp("keys-other")
    key, pub, kid = generate("other", out)
    return KeyPair(key, pub, kid)
