"""bundler.halfcast: onnxruntime's fp16 <-> float32 casts are IEEE 754's, bit for bit numpy's
(Hypothesis over float32 bit patterns; every fp16 value), and the hand-written ONNX model is
protobuf that onnxruntime runs at any length."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler import halfcast as hc


@pytest.fixture(scope="module")
def cast() -> hc.HalfCast:
    made = hc.halfcast()
    assert made is not None, "onnxruntime is a dependency: its casts must load and be exact here"
    return made


def same_bits_or_both_nan(got: np.ndarray, want: np.ndarray, uint: type) -> None:
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(uint), want[~nan].view(uint))


def test_every_fp16_value_widens_exactly(cast: hc.HalfCast) -> None:
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    same_bits_or_both_nan(cast.widen(every, np.empty(len(every), np.float32)), every.astype(np.float32), np.uint32)


@settings(max_examples=200, deadline=None)
@given(bits=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=300))
def test_narrowing_any_float32_rounds_like_numpy(cast: hc.HalfCast, bits: list[int]) -> None:
    """Round to nearest, ties to even, overflow to infinity, subnormals: numpy's astype."""
    x = np.array(bits, dtype=np.uint32).view(np.float32)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    same_bits_or_both_nan(cast.narrow(x, np.empty(len(x), np.float16)), want, np.uint16)


@settings(max_examples=100, deadline=None)
@given(half=st.integers(0, 0x7BFF), sign=st.booleans(), nudge=st.sampled_from([-1, 0, 1]))
def test_narrowing_halfway_between_two_fp16_values_is_ties_to_even(cast: hc.HalfCast, half: int, sign: bool,
                                                                   nudge: int) -> None:
    lo, hi = np.array([half, half + 1], dtype=np.uint16).view(np.float16).astype(np.float64)
    mid = np.array([(lo + hi) / 2 * (-1 if sign else 1)], dtype=np.float32)  # exact: 12 significant bits
    x = (mid.view(np.uint32).astype(np.int64) + nudge).astype(np.uint32).view(np.float32)  # at, above, below
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    same_bits_or_both_nan(cast.narrow(x, np.empty(1, np.float16)), want, np.uint16)


def test_casts_refuse_mismatched_or_strided_buffers_and_accept_empty_and_read_only(cast: hc.HalfCast) -> None:
    x = np.arange(10, dtype=np.float16)
    x.flags.writeable = False  # a mapped file's pages are read-only
    np.testing.assert_array_equal(cast.widen(x, np.empty(10, np.float32)), x.astype(np.float32))
    assert len(cast.widen(x[:0], np.empty(0, np.float32))) == 0
    with pytest.raises(ValueError):
        cast.widen(x, np.empty(9, np.float32))
    with pytest.raises(ValueError):
        cast.widen(x[::2], np.empty(5, np.float32))


def varint(raw: bytes, pos: int) -> tuple[int, int]:
    """Protobuf base-128 varint at ``pos`` (protobuf encoding guide, "Base 128 Varints"):
    little-endian 7-bit groups, the high bit set on every byte but the last; (value, next pos)."""
    n = shift = 0
    while True:
        b = raw[pos]
        n, shift, pos = n | (b & 0x7F) << shift, shift + 7, pos + 1
        if not b & 0x80:
            return n, pos


def fields(raw: bytes) -> list[tuple[int, Any]]:
    """(field number, varint or bytes) of a protobuf message: wire types 0 and 2 only."""
    out: list[tuple[int, Any]] = []
    pos = 0
    while pos < len(raw):
        key, pos = varint(raw, pos)
        assert key & 7 in (0, 2)
        value, pos = varint(raw, pos)
        if key & 7 == 2:
            value, pos = raw[pos:pos + value], pos + value
        out.append((key >> 3, value))
    return out


@given(n=st.integers(0, 2**64 - 1), number=st.integers(1, 2**29 - 1), data=st.binary(max_size=300))
def test_fields_decode_back(n: int, number: int, data: bytes) -> None:
    assert varint(hc._varint(n), 0) == (n, len(hc._varint(n)))
    assert fields(hc._field(number, n) + hc._field(number, data)) == [(number, n), (number, data)]


def test_the_cast_model_is_one_cast_node_of_ir_version_8_and_opset_17() -> None:
    model = dict(fields(hc.cast_model(10, 1)))
    assert model[1] == 8 and dict(fields(model[8])) == {1: b"", 2: 17}
    graph = dict(fields(model[7]))
    node = dict(fields(graph[1]))
    assert (node[1], node[2], node[4]) == (b"x", b"y", b"Cast")
    assert dict(fields(node[5])) == {1: b"to", 3: 1, 20: 2}  # to = FLOAT, an INT attribute


class Truncating(hc.HalfCast):
    """A cast that rounds toward zero instead of to nearest even: what the check must catch."""

    def __init__(self) -> None:
        pass

    def widen(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.copyto(out, x.astype(np.float32))
        return out

    def narrow(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            near = x.astype(np.float16)
            over = np.abs(near.astype(np.float32)) > np.abs(x)  # rounded away from zero: step back
            bits = near.view(np.uint16).copy()
            bits[over & np.isfinite(x)] -= 1
        np.copyto(out, bits.view(np.float16))
        return out


def test_a_cast_that_is_not_ieee_is_refused_and_a_missing_onnxruntime_means_numpy(
        cast: hc.HalfCast, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hc._exact(cast)
    assert not hc._exact(Truncating())
    monkeypatch.setattr(hc, "_made", [])
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails
    assert hc.halfcast() is None
