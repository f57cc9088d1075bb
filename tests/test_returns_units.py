"""Pure parts of the return path: drift summaries and PSI (Hypothesis), return.json, and the
streaming aggregator against numpy (FedAvg, trimmed mean, refusals)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bundler.aggregate as ag
from bundler.aggregate import aggregate, read_header, update_norms
from manifests.errors import FormatError, LimitError, PolicyError, UsageError
from manifests.text import forbidden_char
from manifests.returns import (Histogram, ModelUpdate, ReturnDoc, drift_report, parse_drift, psi)
from tests.test_returns import read_tensors, write_tensors

edges_st = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=12, unique=True).map(sorted)


@st.composite
def histograms(draw: st.DrawFn, edges: list[float] | None = None) -> dict:
    e = edges if edges is not None else draw(edges_st)
    counts = draw(st.lists(st.integers(0, 10**6), min_size=len(e) - 1, max_size=len(e) - 1).filter(lambda c: sum(c) > 0))
    return {"edges": e, "counts": counts}


def doc(features: dict) -> bytes:
    return json.dumps({"format": "ferry-drift", "formatVersion": "1.0", "model": "m", "version": "1.0.0",
                       "features": features}).encode()


@given(histograms())
def test_a_valid_drift_summary_parses_back_to_its_values(h: dict) -> None:
    parsed = parse_drift(doc({"f": h}))
    assert parsed.features["f"] == Histogram(tuple(float(x) for x in h["edges"]), tuple(h["counts"]))


@given(histograms(), st.data())
def test_psi_is_zero_on_itself_and_never_negative(h: dict, data: st.DataObject) -> None:
    a = parse_drift(doc({"f": h})).features["f"]
    b = parse_drift(doc({"f": data.draw(histograms(h["edges"]))})).features["f"]
    assert psi(a, a) == 0.0
    value = psi(a, b)
    assert value is not None and value >= 0 and math.isfinite(value)


@pytest.mark.parametrize("features,why", [
    ({"f": {"edges": [0, 1], "counts": [0]}}, "not all zero"),
    ({"f": {"edges": [0, 1, 1], "counts": [1, 1]}}, "strictly increasing"),
    ({"f": {"edges": [0, 1], "counts": [1, 2]}}, "edges"),
    ({"f": {"edges": [0, 1], "counts": [-1]}}, "whole numbers"),
    ({"f": {"edges": [0, 1], "counts": [1], "x": 1}}, "edges, counts"),
    ({"bad name!": {"edges": [0, 1], "counts": [1]}}, "name"),
    ({}, "non-empty"),
])
def test_malformed_drift_summaries_are_refused(features: dict, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        parse_drift(doc(features))


def test_infinite_edges_and_huge_files_are_refused() -> None:
    with pytest.raises(FormatError):
        parse_drift(doc({"f": {"edges": [0, 1], "counts": [1]}}).replace(b"[0, 1]", b"[0, Infinity]"))
    with pytest.raises(LimitError):
        parse_drift(b" " * (4 * 1024 * 1024 + 1))
    with pytest.raises(LimitError):
        parse_drift(doc({f"f{i}": {"edges": [0, 1], "counts": [1]} for i in range(1001)}))


def test_drift_report_flags_a_shift_and_says_when_bins_differ() -> None:
    ref = parse_drift(doc({"a": {"edges": [0, 1, 2], "counts": [50, 50]}, "b": {"edges": [0, 1, 2], "counts": [5, 5]}}))
    site = parse_drift(doc({"a": {"edges": [0, 1, 2], "counts": [95, 5]}, "b": {"edges": [0, 3, 4], "counts": [5, 5]},
                            "c": {"edges": [0, 1], "counts": [1]}}))
    rows = {r["feature"]: r for r in drift_report(site, ref)}
    assert rows["a"]["flag"] and rows["a"]["psi"] == pytest.approx(0.45 * math.log(0.95 / 0.5) + -0.45 * math.log(0.05 / 0.5))
    assert rows["b"]["psi"] is None and not rows["b"]["flag"] and "edges" in rows["b"]["note"]
    assert rows["c"]["note"] == "not in the reference"


@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), st.integers(1, 10**9)),
                max_size=4, unique_by=lambda t: t[0]), st.integers(0, 1000), st.integers(0, 1000))
def test_return_json_round_trips(updates: list, first: int, count: int) -> None:
    d = ReturnDoc(site="site-01", created="2026-12-01T00:00:00Z", audit_from=first, audit_count=count,
                  updates=tuple(ModelUpdate(m, "1.2.0", n, {"loss": 0.5}) for m, n in updates),
                  metrics=("metrics/a.prom",), drift=("drift/x.json",))
    assert ReturnDoc.from_bytes(d.to_bytes()) == d


@pytest.mark.parametrize("patch,why", [
    ({"format": "ferry-bundle"}, "not a ferry-return"),
    ({"formatVersion": "2.0"}, "not supported"),
    ({"site": "../x"}, "site"),
    ({"updates": [{"model": "m", "base": "1.0.0", "examples": 0}]}, "examples"),
    ({"updates": [{"model": "m", "base": "one", "examples": 1}]}, "version"),
    ({"audit": {"from": -1, "count": 0}}, "audit"),
])
def test_bad_return_documents_are_refused(patch: dict, why: str) -> None:
    base = json.loads(ReturnDoc("s", "2026-12-01T00:00:00Z", 0, 0).to_bytes())
    with pytest.raises(FormatError, match=why):
        ReturnDoc.from_bytes(json.dumps({**base, **patch}).encode())


# --------------------------------------------------------------------------- the aggregator


def sites(tmp: Path, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = {"w": rng.standard_normal((33, 17)).astype(np.float16),
             "b": rng.standard_normal(17).astype(np.float32),
             "d": rng.standard_normal((2, 3, 4)).astype(np.float64)}
        write_tensors(tmp / f"s{i}.safetensors", t)
        out.append(t)
    return out


@settings(max_examples=15, deadline=None)
@given(weights=st.lists(st.integers(1, 10**6), min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1))
def test_fedavg_is_the_example_weighted_mean_in_each_dtype(weights: list[int], seed: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("agg")
    ts = sites(tmp, len(weights), seed)
    aggregate([(f"s{i}", tmp / f"s{i}.safetensors", w) for i, w in enumerate(weights)], tmp / "out.safetensors")
    got = read_tensors(tmp / "out.safetensors")
    for name in ts[0]:
        # independently: float32 sums (float64 for F64) of x_i * (n_i / sum n), in site order
        wide = np.float64 if ts[0][name].dtype == np.float64 else np.float32
        w = np.array(weights, dtype=np.float64) / sum(weights)
        want = np.zeros(ts[0][name].shape, dtype=wide)
        for t, wi in zip(ts, w):
            want += t[name].astype(wide) * wide(wi)
        np.testing.assert_array_equal(got[name], want.astype(ts[0][name].dtype), err_msg=name)
        stack = np.stack([t[name].astype(np.float64) for t in ts])  # and within rounding of the exact mean
        exact = np.average(stack, axis=0, weights=np.array(weights, dtype=np.float64))
        np.testing.assert_allclose(got[name].astype(np.float64), exact,
                                   rtol=np.finfo(ts[0][name].dtype).eps * 2,
                                   atol=np.finfo(ts[0][name].dtype).eps * 4 * float(np.abs(stack).max()))
        assert got[name].dtype == ts[0][name].dtype


def test_trimmed_mean_ignores_a_poisoned_site(tmp_path: Path) -> None:
    ts = sites(tmp_path, 4)
    poisoned = {k: (v.astype(np.float64) * 0 + 1000).astype(v.dtype) for k, v in ts[0].items()}
    write_tensors(tmp_path / "s0.safetensors", poisoned)
    ups = [(f"s{i}", tmp_path / f"s{i}.safetensors", 1) for i in range(4)]
    aggregate(ups, tmp_path / "trim.safetensors", trim=1)
    got = read_tensors(tmp_path / "trim.safetensors")
    assert float(np.abs(got["b"]).max()) < 10  # the 1000s are trimmed away
    with pytest.raises(UsageError, match="more than 2"):
        aggregate(ups[:2], tmp_path / "x.safetensors", trim=1)


def test_mismatched_updates_and_nan_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    ts = sites(tmp_path, 2)
    ups = [("s0", tmp_path / "s0.safetensors", 1), ("s1", tmp_path / "s1.safetensors", 1)]
    for change, why in [({"b": np.zeros(18, dtype=np.float32)}, "shape"),
                        ({"b": ts[1]["b"].astype(np.float64)}, "is F64, not F32"),
                        ({"extra": np.zeros(1, dtype=np.float32)}, "names differ")]:
        write_tensors(tmp_path / "s1.safetensors", {**ts[1], **change})
        with pytest.raises(FormatError, match=why):
            aggregate(ups, tmp_path / "out.safetensors")
        assert not (tmp_path / "out.safetensors").exists()
    bad = dict(ts[1])
    bad["d"] = ts[1]["d"].copy()
    bad["d"][1, 2, 3] = np.inf
    write_tensors(tmp_path / "s1.safetensors", bad)
    with pytest.raises(FormatError, match="s1: tensor 'd' holds NaN or infinity"):
        aggregate(ups, tmp_path / "out.safetensors")
    assert not list(tmp_path.glob("*out.safetensors*"))
    bad = dict(ts[1])  # fp16 goes through the weighted table: a NaN there is refused by name too
    bad["w"] = ts[1]["w"].copy()
    bad["w"][32, 16] = np.nan
    write_tensors(tmp_path / "s1.safetensors", bad)
    with pytest.raises(FormatError, match="s1: tensor 'w' holds NaN or infinity"):
        aggregate(ups, tmp_path / "out.safetensors")
    assert not list(tmp_path.glob("*out.safetensors*"))
    assert set(read_header(tmp_path / "s0.safetensors")) == {"w", "b", "d"}


def test_tensors_larger_than_a_block_average_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bundler.aggregate as ag

    ts = sites(tmp_path, 3, seed=7)
    ups = [(f"s{i}", tmp_path / f"s{i}.safetensors", i + 1) for i in range(3)]
    aggregate(ups, tmp_path / "whole.safetensors")
    monkeypatch.setattr(ag, "BLOCK", 7)  # every tensor spans several blocks, the last one partial
    aggregate(ups, tmp_path / "blocks.safetensors")
    assert (tmp_path / "whole.safetensors").read_bytes() == (tmp_path / "blocks.safetensors").read_bytes()
    aggregate([(n, p, 1) for n, p, _ in ups], tmp_path / "median.safetensors", trim=1)
    got = read_tensors(tmp_path / "median.safetensors")
    for name in ts[0]:  # a trimmed mean of three dropping one each side is the median
        np.testing.assert_array_equal(got[name], np.median(np.stack([t[name] for t in ts]), axis=0).astype(ts[0][name].dtype))


# --------------------------------------------------------------------------- speed: widening, windows, threads

EVERY_FINITE_HALF = np.concatenate([np.arange(0x7C00, dtype=np.uint16),
                                    np.arange(0x8000, 0xFC00, dtype=np.uint16)]).view(np.float16)


@settings(max_examples=30, deadline=None)
@given(w=st.floats(min_value=2.0 ** -60, max_value=1.0, allow_subnormal=False))
def test_the_bit_widening_is_numpys_cast_and_product_for_every_finite_half(w: float) -> None:
    """Every finite fp16 value (subnormals, -0 and 65504 included) times any weight: bit for bit
    ``x.astype(float32) * float32(w)``, the definition the mean is computed by."""
    n = len(EVERY_FINITE_HALF)
    got = ag._widen(EVERY_FINITE_HALF, w, np.empty(n, np.int32), np.empty(n, np.float32))
    want = EVERY_FINITE_HALF.astype(np.float32) * np.float32(w)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def big_sites(tmp: Path, n: int, size: int, seed: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = {"a": (rng.standard_normal(size) * 10.0 ** rng.integers(-6, 4, size)).astype(np.float16),
             "b": rng.standard_normal(size // 3).astype(np.float32), "c": rng.standard_normal(5).astype(np.float64)}
        write_tensors(tmp / f"s{i}.safetensors", t)
        out.append(t)
    return out


@pytest.mark.parametrize("casts", ["onnxruntime", "numpy"])
@pytest.mark.parametrize("workers,budget", [(1, 64 << 20), (3, 64 << 20), (4, 1)])
def test_windows_and_threads_never_change_a_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                workers: int, budget: int, casts: str) -> None:
    """However a tensor is cut into windows and blocks and whatever the number of threads, the
    file is the numpy definition (float32 sums in update order), byte for byte; budget 1 forces
    one block per window, so tensors span many mappings at offsets no page boundary aligns.
    Both fp16 paths: onnxruntime's casts, and numpy's where onnxruntime is missing or inexact."""
    if casts == "numpy":
        monkeypatch.setattr(ag, "halfcast", lambda: None)
    else:
        assert ag.halfcast() is not None  # a dependency, checked exact on this machine
    ts = big_sites(tmp_path, 5, 10_001)
    ups = [(f"s{i}", tmp_path / f"s{i}.safetensors", 7 * i + 1) for i in range(5)]
    monkeypatch.setattr(ag, "BLOCK", 997)
    monkeypatch.setattr(ag, "WINDOW_BLOCKS", 3)
    monkeypatch.setattr(ag, "MAP_BUDGET", budget)
    monkeypatch.setattr(ag, "_workers", lambda: workers)
    aggregate(ups, tmp_path / "out.safetensors")
    got = read_tensors(tmp_path / "out.safetensors")
    w = np.array([n for _, _, n in ups], dtype=np.float64) / sum(n for _, _, n in ups)
    for name in ts[0]:
        wide = np.float64 if ts[0][name].dtype == np.float64 else np.float32
        want = ts[0][name].astype(wide) * wide(w[0])
        for t, wi in zip(ts[1:], w[1:]):
            want = want + t[name].astype(wide) * wide(wi)
        np.testing.assert_array_equal(got[name].view(np.uint8), want.astype(ts[0][name].dtype).view(np.uint8),
                                      err_msg=name)


@pytest.mark.parametrize("casts", ["onnxruntime", "numpy"])
def test_a_nan_in_a_late_window_of_an_fp16_tensor_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      casts: str) -> None:
    if casts == "numpy":
        monkeypatch.setattr(ag, "halfcast", lambda: None)
    ts = big_sites(tmp_path, 3, 5000)
    monkeypatch.setattr(ag, "BLOCK", 100)
    monkeypatch.setattr(ag, "WINDOW_BLOCKS", 2)
    for bad in (np.float16(np.nan), np.float16(-np.inf)):
        t = dict(ts[2])
        t["a"] = ts[2]["a"].copy()
        t["a"][4321] = bad
        write_tensors(tmp_path / "s2.safetensors", t)
        with pytest.raises(FormatError, match="update of s2: tensor 'a' holds NaN or infinity"):
            aggregate([(f"s{i}", tmp_path / f"s{i}.safetensors", 1) for i in range(3)], tmp_path / "out.safetensors")
        assert not list(tmp_path.glob("*out.safetensors*"))


# --------------------------------------------------------------------------- the norm screen


def test_update_norms_are_the_l2_norms_of_the_update_or_of_its_difference_from_the_base(tmp_path: Path) -> None:
    ts = big_sites(tmp_path, 3, 3000)
    ups = [(f"s{i}", tmp_path / f"s{i}.safetensors", 1) for i in range(3)]
    flat = [np.concatenate([t[k].astype(np.float64).ravel() for k in sorted(t)]) for t in ts]
    got = update_norms(ups)
    for i in range(3):
        assert got[f"s{i}"] == pytest.approx(float(np.linalg.norm(flat[i])), rel=1e-12)
    got = update_norms(ups[1:], tmp_path / "s0.safetensors")  # s0 as the base
    for i in (1, 2):
        assert got[f"s{i}"] == pytest.approx(float(np.linalg.norm(flat[i] - flat[0])), rel=1e-12)


def test_max_norm_ratio_refuses_the_far_update_by_name_and_writes_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base = {"w": rng.standard_normal((40, 30)).astype(np.float16), "b": rng.standard_normal(30).astype(np.float32)}
    write_tensors(tmp_path / "base.safetensors", base)
    steps = {"s0": 0.01, "s1": 0.012, "s2": 0.011, "bad": 0.5}  # how far each site moved from the base
    for site, step in steps.items():
        write_tensors(tmp_path / f"{site}.safetensors",
                      {k: (v.astype(np.float64) + step * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in base.items()})
    ups = [(f"site {s} (return bundle 1)", tmp_path / f"{s}.safetensors", 10) for s in steps]
    out = tmp_path / "out.safetensors"
    with pytest.raises(PolicyError, match=r"^update of site bad \(return bundle 1\): the L2 norm of its update - base is "
                                          r"[0-9.]+, [0-9.]+ times the median of the others' .* over --max-norm-ratio 3"):
        aggregate(ups, out, base_file=tmp_path / "base.safetensors", max_norm_ratio=3)
    assert not list(tmp_path.glob("*out.safetensors*"))
    result = aggregate(ups[:3], out, base_file=tmp_path / "base.safetensors", max_norm_ratio=3)  # the honest three pass
    assert set(result["norms"]) == {u[0] for u in ups[:3]} and out.exists()
    # without the base, every update's own norm is about the base's: nobody stands out, even the far one
    assert aggregate(ups, out, max_norm_ratio=3)["method"] == "fedavg"


def test_max_norm_ratio_needs_two_updates_and_a_ratio_of_at_least_one(tmp_path: Path) -> None:
    sites(tmp_path, 2)
    ups = [(f"s{i}", tmp_path / f"s{i}.safetensors", 1) for i in range(2)]
    with pytest.raises(UsageError, match="needs 2 updates"):
        aggregate(ups[:1], tmp_path / "out.safetensors", max_norm_ratio=2)
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="at least 1"):
            aggregate(ups, tmp_path / "out.safetensors", max_norm_ratio=bad)
    identical = {"w": np.zeros(3, np.float32)}
    write_tensors(tmp_path / "z0.safetensors", identical)
    write_tensors(tmp_path / "z1.safetensors", {"w": np.ones(3, np.float32)})
    with pytest.raises(PolicyError, match="update of z1: .* infinitely many times the median of the others' \\(0\\)"):
        aggregate([("z0", tmp_path / "z0.safetensors", 1), ("z1", tmp_path / "z1.safetensors", 1)],
                  tmp_path / "out.safetensors", max_norm_ratio=100)


# --------------------------------------------------------------------------- the mean's file (O_DIRECT)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 20_000), max_size=8), direct=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_the_output_file_holds_exactly_the_bytes_written(sizes: list[int], direct: bool, seed: int,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """Whatever the lengths written (staged 8 KiB at a time here, so writes span and fill the
    stage; the last one padded for O_DIRECT then cut back), the file is their concatenation;
    and the same where the file system refuses O_DIRECT (open answers EINVAL)."""
    import errno
    import os

    path = tmp_path_factory.mktemp("out") / "f"
    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    real_open = os.open

    def refusing(p: object, flags: int, *a: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(p, flags, *a)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ag, "STAGE", 8192)
        if not direct:
            mp.setattr(os, "open", refusing)
        with ag._Output(path) as out:
            for p in parts:
                out.write(p)
    assert path.read_bytes() == b"".join(parts)


# --------------------------------------------------------------------------- aggregate --exclude (update selection)

SITE_NAMES = st.from_regex(r"[a-z][a-z0-9._-]{0,11}", fullmatch=True)


PLAIN_TEXT = st.text(min_size=1, max_size=30).filter(lambda t: forbidden_char(t) is None)


@given(sites=st.lists(SITE_NAMES, min_size=1, max_size=6, unique=True),
       reasons=st.lists(st.none() | PLAIN_TEXT, min_size=6, max_size=6))
def test_exclusions_parse_back_to_their_sites_and_reasons(sites: list[str], reasons: list[str | None]) -> None:
    from bundler.inventory import parse_exclusions

    values = [s if r is None else f"{s}={r}" for s, r in zip(sites, reasons)]
    got = parse_exclusions(values)
    assert list(got) == sites  # the order given
    for s, r in zip(sites, reasons):
        assert got[s] == ((r.strip() or None) if r is not None else None)  # "=" inside a reason is the reason's
    with pytest.raises(UsageError, match="given twice"):
        parse_exclusions(values + [sites[0]])


@given(bad=st.text(max_size=20).filter(lambda t: not __import__("re").fullmatch(r"[A-Za-z0-9._-]{1,128}",
                                                                               t.partition("=")[0])))
def test_an_exclusion_without_a_site_name_is_refused(bad: str) -> None:
    from bundler.inventory import parse_exclusions

    with pytest.raises(UsageError, match="write SITE or SITE=REASON"):
        parse_exclusions([bad])


@pytest.mark.parametrize("bad", ["edge-a\n", "edge-a\n=flaky"])
def test_an_exclusion_whose_site_ends_in_a_newline_is_refused_as_no_site_name(bad: str) -> None:
    """NAME_RE ends in "$", which also matches before a final newline: "edge-a\n" is no site."""
    from bundler.inventory import parse_exclusions

    with pytest.raises(UsageError, match="write SITE or SITE=REASON"):
        parse_exclusions([bad])


@given(site=SITE_NAMES, before=PLAIN_TEXT, after=st.text(max_size=5),
       bad=st.sampled_from(["\n", "\x1b", "\x9b", "\u202e", "\u200b", "\x00"]))
def test_an_exclusion_reason_with_a_control_character_is_refused(site: str, before: str, after: str, bad: str) -> None:
    """The reason is printed on the hub's terminal and kept in provenance.json: an escape
    sequence or a bidi override could forge what the operator or an auditor reads."""
    from bundler.inventory import parse_exclusions

    with pytest.raises(UsageError, match=f"--exclude {re.escape(site)}: the reason contains"):
        parse_exclusions([f"{site}={before}{bad}{after}"])


@given(sites=st.lists(SITE_NAMES, min_size=1, max_size=5, unique=True), data=st.data())
def test_selection_keeps_every_update_but_the_excluded_sites(sites: list[str], data: st.DataObject) -> None:
    from bundler.inventory import select_updates

    pending = [{"site": s, "sequence": n, "bundle": f"{s}/{n}", "examples": 1}
               for s in sites for n in range(data.draw(st.integers(0, 2)))]
    excluded = data.draw(st.lists(st.sampled_from(sites), unique=True))
    having = {u["site"] for u in pending}
    try:
        sel = select_updates(pending, sites, {s: None for s in excluded}, "model m from base 1.0.0", "--hub H")
    except UsageError as exc:
        assert not pending and "no pending updates" in str(exc) or having <= set(excluded) and "every site" in str(exc)
        return
    assert sel.kept == [u for u in pending if u["site"] not in excluded]
    assert [x["site"] for x in sel.excluded] == excluded
    assert [x["updates"] for x in sel.excluded] == [
        [{"sequence": u["sequence"], "bundle": u["bundle"]} for u in pending if u["site"] == site] for site in excluded]
    with pytest.raises(UsageError, match="no such site"):
        select_updates(pending, sites, {"not-a-known-site!": None}, "model m from base 1.0.0", "--hub H")
