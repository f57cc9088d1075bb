"""The memory budget (issue 19, goal 2): one number sizes export's and import's buffers, and
``--memory-budget`` lowers it; below the floor it is a usage error, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manifests import budget
from manifests.errors import UsageError
from manifests.limits import GiB, MiB
from tests.support.common import KeyPair, assert_clean_failure, run_ferry
from tests.support.export import make_model, read_back, write_spec

budgets = st.integers(min_value=budget.MIN_MEMORY_BUDGET, max_value=64 * GiB)
cores = st.integers(min_value=1, max_value=512)


@given(budgets, cores)
def test_export_shares_fit_in_the_budget_whatever_the_core_count(total: int, cpus: int) -> None:
    s = budget.export_sizes(total, cpus)
    fixed = budget.RUNTIME + budget.WINDOWS + budget.ONE_CHUNK
    shares = 2 * s.in_flight + s.queued + s.workers * budget.ZSTD_CONTEXT + s.max_header * budget.HEADER_PARSE_FACTOR + s.trim
    assert fixed + shares <= total
    assert 1 <= s.workers <= cpus and s.in_flight >= MiB and s.queued >= MiB


@given(budgets, budgets, cores)
def test_a_lower_budget_never_sizes_anything_larger(a: int, b: int, cpus: int) -> None:
    low, high = sorted((a, b))
    for size in (budget.export_sizes, budget.import_sizes):
        assert all(x <= y for x, y in zip(vars(size(low, cpus)).values(), vars(size(high, cpus)).values()))


@given(budgets, cores)
def test_import_read_ahead_fits_in_the_budget(total: int, cpus: int) -> None:
    s = budget.import_sizes(total, cpus)
    assert budget.RUNTIME + (1 + s.read_ahead) * budget.ONE_CHUNK <= total
    assert budget.RUNTIME + budget.ONE_CHUNK + s.max_header * budget.HEADER_PARSE_FACTOR <= total
    assert 1 <= s.workers <= min(2, cpus) and s.read_ahead >= 1


def test_core_count_does_not_grow_the_default_export_pool() -> None:
    assert budget.export_sizes(budget.MEMORY_BUDGET, 2).workers == 2
    assert budget.export_sizes(budget.MEMORY_BUDGET, 16) == budget.export_sizes(budget.MEMORY_BUDGET, 256)


def test_budget_below_the_floor_is_refused() -> None:
    with pytest.raises(UsageError, match="--memory-budget must be at least 192 MiB"):
        budget.check(budget.MIN_MEMORY_BUDGET - 1)
    assert budget.check(budget.MIN_MEMORY_BUDGET) == budget.MIN_MEMORY_BUDGET


def test_export_and_import_keep_to_a_lowered_budget(tmp_path: Path, hub_keys: KeyPair) -> None:
    make_model(tmp_path / "m", count=4, size=3 * MiB, seed=19)
    spec = write_spec(tmp_path / "bundle.yaml", [("m", "1.0.0", "m")])
    out = tmp_path / "out"
    r = run_ferry("export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp_path / "hub",
                  "--memory-budget", "192MiB")
    assert r.returncode == 0, r.stderr
    read_back(out, hub_keys.pub)
    r = run_ferry("import", out, "--trust", hub_keys.pub, "--state", tmp_path / "edge", "--memory-budget", "192MiB")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "edge").rglob("model.safetensors"))
    assert files and (tmp_path / "m" / "model.safetensors").read_bytes() in {
        p.read_bytes() for p in (tmp_path / "edge").rglob("model.safetensors")}


@pytest.mark.parametrize("command", ["export", "import"])
def test_too_small_a_budget_is_one_line_exit_2(tmp_path: Path, hub_keys: KeyPair, command: str) -> None:
    make_model(tmp_path / "m", count=1, size=MiB, seed=1)
    spec = write_spec(tmp_path / "bundle.yaml", [("m", "1.0.0", "m")])
    if command == "export":
        args: list[object] = ["export", spec, "--out", tmp_path / "out", "--key", hub_keys.key, "--state", tmp_path / "hub"]
    else:
        args = ["import", tmp_path, "--trust", hub_keys.pub, "--state", tmp_path / "edge"]
    for bad, why in (("64MiB", "at least 192 MiB"), ("lots", "is not a size")):
        r = run_ferry(*args, "--memory-budget", bad)
        assert_clean_failure(r, code=2, contains=why)
    assert not (tmp_path / "out").exists() and not (tmp_path / "edge").exists()
