"""The compiled framing layer and its pure-Python twin behave the same: the
compiled engine's own msgpack reader and writer for small headers.

Skipped (with the reason) when the compiled module is not built; CI builds
it, so there the comparison always runs.
"""

from __future__ import annotations

import importlib

import msgpack
import numpy as np
import pytest
from engines import once_per_suite
from framing_parity_helpers import LIMIT, _decoded, _encoded
from hypothesis import given, settings
from hypothesis import strategies as st
from short_repr import assert_same

from framerpc.wire import _framing_py as pure
from framerpc.wire._framing_common import OutOfBand

pytestmark = once_per_suite

try:
    compiled = importlib.import_module("framerpc.wire._framing")
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(f"compiled framing layer not built: {exc}", allow_module_level=True)

# -- the compiled engine's own msgpack reader and writer for small headers --
# Both must give msgpack's bytes and msgpack's objects exactly, and hand
# anything else (or anything damaged) to the general path: values at every
# size boundary of the msgpack formats, and headers that are cut, extended
# or have a byte changed.
EDGE_INTS = [0, 31, 32, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32]


EDGE_INTS += [2**63 - 1, 2**63, 2**64 - 1, 2**64, -1, -32, -33, -128, -129]


EDGE_INTS += [-32768, -32769, -(2**31), -(2**31) - 1, -(2**63), -(2**63) - 1]


edge_scalars = st.one_of(
    st.sampled_from(EDGE_INTS),
    st.sampled_from([0, 1, 31, 32, 255, 256, 65535, 65536]).map(lambda n: "x" * n),
    st.sampled_from([0, 255, 256, 65536]).map(lambda n: b"b" * n),
    st.sampled_from(["\ud800", "é" * 20, float("nan"), -0.0, 1e300, True, None]),
    st.builds(
        OutOfBand,
        st.one_of(
            st.sampled_from([b"ab", bytearray(b"cd"), np.arange(4, dtype=np.uint8)]),
            # built, not sampled: hypothesis hashes sampled values
            st.builds(lambda: memoryview(np.arange(6, dtype=np.uint16).reshape(2, 3))),
            st.builds(lambda: memoryview(np.zeros((2, 3)).T)),  # not contiguous
        ),
    ),
    st.sampled_from([np.arange(6, dtype=np.uint16), np.zeros((2, 3)).T]),
)


edge_values = st.recursive(
    edge_scalars,
    lambda inner: st.one_of(
        st.lists(inner, min_size=14, max_size=17),
        st.dictionaries(
            st.one_of(st.text(max_size=3), st.integers(-40, 300), st.booleans()),
            inner,
            max_size=17,
        ),
    ),
    max_leaves=40,
)


# Each example draws containers of 14 to 17 items (either side of msgpack's
# 16-item boundary): generating one takes tens of milliseconds.
@settings(max_examples=60)
@given(
    st.dictionaries(st.text(max_size=3), edge_values, max_size=3),
    st.sampled_from([0, 8, LIMIT]),
)
def test_identical_frames_at_msgpack_size_boundaries(header, limit):
    encoded = _encoded(pure, header, limit)
    assert_same(_encoded(compiled, header, limit), encoded, "frames (compiled, pure)")
    if type(encoded) is list:  # and read back alike
        assert_same(
            _decoded(compiled, encoded),
            _decoded(pure, encoded),
            "decodings (compiled, pure)",
        )


REFERENCES = [
    msgpack.ExtType(1, b"\x01"),
    msgpack.ExtType(1, b"\x05"),
    msgpack.ExtType(2, msgpack.packb([1, "<u2", [3]])),
    msgpack.ExtType(2, msgpack.packb([2, "|u1", [2, 3]])),
    msgpack.ExtType(3, msgpack.packb(["<f4", [1], b"\0\0\0\0"])),
]


wire_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.integers(-40, 300),
        st.sampled_from(EDGE_INTS),
        st.floats(),
        st.text(max_size=40),
        st.binary(max_size=300),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=20)),
        st.sampled_from(REFERENCES),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=17),
        st.dictionaries(
            st.one_of(st.text(max_size=4), st.integers(-3, 300), st.binary(max_size=2)),
            inner,
            max_size=17,
        ),
    ),
    max_leaves=30,
)


@st.composite
def wire_messages(draw):
    try:
        head = msgpack.packb(draw(wire_values), use_single_float=draw(st.booleans()))
    except (ValueError, OverflowError):  # an int past 64 bits
        head = b"\xc0"
    damage = draw(st.sampled_from(["none", "byte", "cut", "tail"]))
    if damage == "byte":
        at = draw(st.integers(0, len(head) - 1))
        head = head[:at] + bytes([draw(st.integers(0, 255))]) + head[at + 1 :]
    elif damage == "cut":
        head = head[: draw(st.integers(0, len(head) - 1))]
    elif damage == "tail":
        head += draw(st.binary(min_size=1, max_size=3))
    frames = draw(st.lists(st.sampled_from([b"\0" * 6, b"ab", b""]), max_size=3))
    return [draw(st.sampled_from([bytes, bytearray, memoryview]))(head), *frames]


@settings(max_examples=300)
@given(wire_messages())
def test_identical_outcomes_on_arbitrary_and_damaged_msgpack(frames):
    assert_same(
        _decoded(compiled, frames), _decoded(pure, frames), "outcomes (compiled, pure)"
    )
