"""The compiled framing layer and its pure-Python twin behave the same.

Skipped (with the reason) when the compiled module is not built; CI builds
it, so there the comparison always runs.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framerpc import _framing_py as pure
from framerpc.errors import ProtocolError, SerializationError

try:
    compiled = importlib.import_module("framerpc._framing")
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(f"compiled framing layer not built: {exc}", allow_module_level=True)

LIMIT = pure.INLINE_LIMIT
DTYPES = ["u1", "<u2", "<i4", "<f4", "<f8", "?", "<c8"]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.lists(st.integers(0, 40), max_size=3))
    count = int(np.prod(shape)) if shape else 1
    data = draw(
        st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize)
    )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=40),
    st.sampled_from([b"x" * LIMIT, bytearray(LIMIT + 1)]),
    arrays(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(0, 99)), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
headers = st.dictionaries(st.text(max_size=5), values, max_size=5)


def _as_bytes(frame) -> bytes:
    return memoryview(frame).tobytes()


def test_both_engines_export_the_same_names():
    assert sorted(pure.__all__) == sorted(compiled.__all__)
    for name in pure.__all__:
        assert hasattr(compiled, name)
    assert compiled.OutOfBand is pure.OutOfBand  # shared, not duplicated


@settings(max_examples=300, deadline=None)
@given(headers)
def test_identical_frames_for_the_same_header(header):
    frames_pure, frames_compiled = pure.encode(header), compiled.encode(header)
    assert [_as_bytes(f) for f in frames_pure] == [
        _as_bytes(f) for f in frames_compiled
    ]


@settings(max_examples=200, deadline=None)
@given(headers)
def test_identical_decoding(header):
    frames = [_as_bytes(f) for f in pure.encode(header)]
    again_pure = pure.encode(pure.decode(frames))
    again_compiled = pure.encode(compiled.decode(frames))
    assert [_as_bytes(f) for f in again_pure] == [_as_bytes(f) for f in again_compiled]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_identical_errors_on_garbage(frames):
    outcomes = []
    for engine in (pure, compiled):
        try:
            decoded = pure.encode(engine.decode(frames))
            outcomes.append(("ok", [_as_bytes(f) for f in decoded]))
        except ProtocolError as exc:
            outcomes.append(("error", type(exc)))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("value", [{1, 2}, object(), np.array([object()])])
def test_same_serialization_errors(value):
    for engine in (pure, compiled):
        with pytest.raises(SerializationError):
            engine.encode({"v": value})
