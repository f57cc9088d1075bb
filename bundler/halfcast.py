"""fp16 <-> float32 casts of whole buffers at SIMD speed, by onnxruntime's ``Cast`` operator.

numpy (2.4) casts fp16 one element at a time, at about 0.7 G elements/s per core; onnxruntime's
CPU ``Cast`` runs MLAS's vectorised conversions (the F16C ``vcvtph2ps``/``vcvtps2ph``
instructions where the CPU has them), measured at 8-13 G elements/s per core on the build machine
for buffers of 128-256 Ki elements, and releases the GIL while it runs. Both conversions are
IEEE 754's: fp16 -> float32 is exact (every binary16 value is a binary32 value: infinities and
NaN stay what they are), float32 -> fp16 rounds to nearest, ties to even, overflowing to
infinity (IEEE 754-2019, section 4.3.1 and 7.4). :func:`halfcast` checks that this machine's
onnxruntime does exactly that (every fp16 value, every rounding boundary) before it is used,
and answers None when it does not or when onnxruntime cannot be imported: callers then use
numpy.

The two one-node models are written here as ONNX protobuf bytes (``onnx.proto``, ONNX IR
version 8, opset 17, ``Cast``: https://onnx.ai/onnx/operators/onnx__Cast.html) rather than
built with the ``onnx`` package, one more dependency for some 60 bytes.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

#: ``onnx.proto`` TensorProto.DataType values.
_FLOAT, _FLOAT16 = 1, 10


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    """One protobuf field: a varint (wire type 0) or length-delimited bytes (wire type 2)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def cast_model(src: int, dst: int) -> bytes:
    """An ONNX model (serialised ``ModelProto``) of one ``Cast`` from a 1-D tensor of element
    type ``src`` to ``dst`` (``onnx.proto`` TensorProto.DataType numbers), its length free
    (``dim_param "n"``).

    Field numbers are ``onnx.proto``'s: ModelProto ir_version 1, graph 7, opset_import 8;
    GraphProto node 1, name 2, input 11, output 12; NodeProto input 1, output 2, op_type 4,
    attribute 5; AttributeProto name 1, i 3, type 20 (INT = 2); ValueInfoProto name 1, type 2;
    TypeProto tensor_type 1; TypeProto.Tensor elem_type 1, shape 2; TensorShapeProto dim 1;
    Dimension dim_param 2; OperatorSetIdProto domain 1, version 2.
    """
    def value(name: bytes, elem: int) -> bytes:
        shape = _field(1, _field(2, b"n"))
        return _field(1, name) + _field(2, _field(1, _field(1, elem) + _field(2, shape)))

    node = _field(1, b"x") + _field(2, b"y") + _field(4, b"Cast") + _field(5, _field(1, b"to") + _field(3, dst) + _field(20, 2))
    graph = _field(1, node) + _field(2, b"cast") + _field(11, value(b"x", src)) + _field(12, value(b"y", dst))
    return _field(1, 8) + _field(7, graph) + _field(8, _field(1, b"") + _field(2, 17))


class HalfCast:
    """Casts between fp16 and float32 buffers with two onnxruntime sessions (one thread each:
    callers run their own threads; every thread may call at once)."""

    def __init__(self, ort: Any) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3  # errors only: ferry's stderr is its own
        self._up = ort.InferenceSession(cast_model(_FLOAT16, _FLOAT), options, providers=["CPUExecutionProvider"])
        self._down = ort.InferenceSession(cast_model(_FLOAT, _FLOAT16), options, providers=["CPUExecutionProvider"])
        self._local = threading.local()

    def _bindings(self) -> tuple[Any, Any]:
        local = self._local
        if not hasattr(local, "up"):
            local.up, local.down = self._up.io_binding(), self._down.io_binding()
        return local.up, local.down

    def widen(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[:] = float32(x)``, exactly.

        Args:
            x: contiguous 1-D fp16 array (it may be read-only, e.g. a mapped file's pages).
            out: contiguous 1-D float32 array of the same length, written.
        Returns:
            ``out``.
        """
        return self._run(0, x, out)

    def narrow(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[:] = float16(x)``, rounded to nearest, ties to even (IEEE 754-2019, 4.3.1).

        Args:
            x: contiguous 1-D float32 array; out: contiguous 1-D fp16 array of the same length.
        Returns:
            ``out``.
        """
        return self._run(1, x, out)

    def _run(self, which: int, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        if len(x) != len(out) or not (x.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("halfcast: x and out must be contiguous and of one length")
        if len(x):
            binding = self._bindings()[which]
            binding.bind_input("x", "cpu", 0, x.dtype, [len(x)], x.ctypes.data)
            binding.bind_output("y", "cpu", 0, out.dtype, [len(out)], out.ctypes.data)
            (self._down if which else self._up).run_with_iobinding(binding)
        return out


def _exact(cast: HalfCast) -> bool:
    """Whether ``cast`` agrees bit for bit with numpy's (IEEE 754) conversions on every fp16
    value, and on every float32 at, just below and just above each rounding boundary between
    two fp16 values (ties to even), past the largest fp16 (overflow) and in the subnormal range."""
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    wide = cast.widen(every, np.empty(len(every), np.float32))
    want = every.astype(np.float32)
    nan = np.isnan(want)
    if not (np.array_equal(np.isnan(wide), nan) and np.array_equal(wide[~nan].view(np.uint32), want[~nan].view(np.uint32))):
        return False
    finite = want[np.isfinite(want)]
    finite.sort()
    mid = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)  # exact in float32
    top = np.float32(65504.0)
    edges = np.concatenate([finite, mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf)),
                            np.array([65519.996, 65520.0, 1e6, np.inf, -np.inf, np.nan, 1e-40, -1e-45], np.float32),
                            np.linspace(-top * 1.01, top * 1.01, 10001, dtype=np.float32)])
    narrow = cast.narrow(edges, np.empty(len(edges), np.float16))
    with np.errstate(over="ignore"):
        want16 = edges.astype(np.float16)
    nan = np.isnan(want16)
    return bool(np.array_equal(np.isnan(narrow), nan)
                and np.array_equal(narrow[~nan].view(np.uint16), want16[~nan].view(np.uint16)))


_lock = threading.Lock()
_made: list[HalfCast | None] = []


def halfcast() -> HalfCast | None:
    """The process's :class:`HalfCast`, made and checked (:func:`_exact`) on the first call;
    None when onnxruntime cannot be imported or is not exact on this machine.

    Raises:
        nothing: any failure to load or check onnxruntime answers None (callers use numpy).
    """
    with _lock:
        if not _made:
            cast: HalfCast | None
            try:
                import onnxruntime

                cast = HalfCast(onnxruntime)
                if not _exact(cast):
                    cast = None
            except Exception:  # noqa: BLE001 - any failure: numpy's casts, same bits, slower
                cast = None
            _made.append(cast)
        return _made[0]
