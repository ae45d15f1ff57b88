"""The framing layer alone: no sockets. One case table drives encode and decode."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from framerpc import framing
from framerpc.errors import MessageTooLargeError, ProtocolError, SerializationError

LIMIT = framing.INLINE_LIMIT

# (header value, expected number of out-of-band frames)
CASES = {
    "scalars": ({"a": [None, True, 1, -(2**63), 2**64 - 1, 1.5, "é", b"x"]}, 0),
    "nested": ({"a": {"b": [[1, {"c": (2, 3)}]]}}, 0),
    "int keys": ({1: "one", 2: "two"}, 0),
    "small bytes inline": ({"b": b"x" * (LIMIT - 1)}, 0),
    "large bytes": ({"b": b"x" * LIMIT}, 1),
    "large bytearray": ({"b": bytearray(LIMIT * 2)}, 1),
    "large memoryview": ({"b": memoryview(b"y" * LIMIT * 3)}, 1),
    "small array inline": ({"a": np.arange(3, dtype=np.int16)}, 0),
    "0-d array": ({"a": np.array(7.5)}, 0),
    "empty array": ({"a": np.zeros((0, 4), np.float32)}, 0),
    "large array": ({"a": np.arange(LIMIT, dtype=np.uint16)}, 1),
    "two large": ({"a": np.ones((LIMIT, 3), np.uint8), "b": b"z" * LIMIT}, 2),
    "datetime64 inline": ({"a": np.arange(3).astype("datetime64[s]")}, 0),
    "datetime64": ({"a": np.arange(LIMIT).astype("datetime64[ns]")}, 1),
    "timedelta64 0-d": ({"a": framing.OutOfBand(np.array(np.timedelta64(5, "ms")))}, 1),
    "forced tiny": ({"a": framing.OutOfBand(b"")}, 1),
    "forced array": ({"a": framing.OutOfBand(np.arange(2))}, 1),
}


def _normalise(value):
    """What a value looks like after a round trip (tuples become lists)."""
    if isinstance(value, framing.OutOfBand):
        return _normalise(value.value)
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def _assert_same(got, expected):
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            _assert_same(g, e)
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys()
        for key in expected:
            _assert_same(got[key], expected[key])
    elif isinstance(got, memoryview):
        assert got.readonly and got.tobytes() == expected
    else:
        assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("header, n_buffers", CASES.values(), ids=CASES.keys())
def test_round_trip(header, n_buffers):
    frames = framing.encode(header)
    assert isinstance(frames[0], bytes)
    assert len(frames) == 1 + n_buffers
    # as received from a socket: each frame its own buffer object
    received = [frames[0]] + [memoryview(bytes(memoryview(f))) for f in frames[1:]]
    _assert_same(framing.decode(received), _normalise(header))


def test_out_of_band_buffers_are_not_copied():
    payload = bytearray(LIMIT * 4)
    array = np.zeros((200, 200), np.uint16)
    frames = framing.encode({"b": payload, "a": array})
    assert frames[1] is payload
    assert frames[2] is array


def test_decoded_views_share_the_received_frame():
    frames = framing.encode({"a": np.arange(LIMIT, dtype=np.uint8), "b": b"q" * LIMIT})
    received = [frames[0], bytearray(frames[1].tobytes()), bytearray(frames[2])]
    header = framing.decode(received)
    received[1][0] = 200
    received[2][0] = ord("Z")
    assert header["a"][0] == 200  # same memory, no copy
    assert header["b"][0] == ord("Z")
    assert not header["a"].flags.writeable and header["b"].readonly


def test_non_contiguous_array_is_sent_in_c_order():
    base = np.arange(LIMIT * 2, dtype=np.int32).reshape(64, -1)
    view = base[:, ::2].T
    frames = framing.encode({"a": view})
    assert frames[1].flags.c_contiguous
    got = framing.decode([frames[0], frames[1].tobytes()])["a"]
    np.testing.assert_array_equal(got, view)


def test_numpy_scalars_become_python_scalars():
    frames = framing.encode({"i": np.uint16(7), "f": np.float32(0.5), "b": np.bool_(1)})
    assert framing.decode(frames) == {"i": 7, "f": 0.5, "b": True}


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        object(),
        np.array([object()]),
        complex(1, 2),
        {(1, 2): 3},
        np.zeros(3, dtype=[("x", "i4")]),
    ],
    ids=["set", "object", "object array", "complex", "tuple key", "structured"],
)
def test_unsupported_values_raise_type_error(value):
    with pytest.raises(SerializationError) as info:
        framing.encode({"v": value})
    assert isinstance(info.value, TypeError)


def _header(value, *frames):
    return [msgpack.packb(value, use_bin_type=True), *frames]


def _ext(code, spec):
    return msgpack.ExtType(code, msgpack.packb(spec))


MALFORMED = {
    "not msgpack": [b"\xc1\xc1"],
    "truncated": [msgpack.packb({"a": "bcdef"})[:-2]],
    "not a map": _header([1, 2]),
    "empty message": [],
    "dangling buffer": _header({"b": _ext(framing.EXT_BUFFER, 1)}),
    "buffer index 0": _header({"b": _ext(framing.EXT_BUFFER, 0)}, b"x"),
    "index not int": _header({"b": _ext(framing.EXT_BUFFER, "1")}, b"x"),
    "referenced twice": _header(
        {"a": _ext(framing.EXT_BUFFER, 1), "b": _ext(framing.EXT_BUFFER, 1)}, b"x"
    ),
    "unreferenced frame": _header({"a": 1}, b"extra"),
    "size mismatch": _header({"a": _ext(framing.EXT_ARRAY, [1, "<u2", [3]])}, b"x" * 5),
    "huge shape": _header(
        {"a": _ext(framing.EXT_ARRAY, [1, "<u1", [2**40, 2**40]])}, b"x"
    ),
    "negative dim": _header({"a": _ext(framing.EXT_ARRAY, [1, "<u1", [-1]])}, b""),
    "bad dtype": _header({"a": _ext(framing.EXT_ARRAY, [1, "nope", [1]])}, b"x"),
    "object dtype": _header({"a": _ext(framing.EXT_ARRAY, [1, "O", [1]])}, b"x" * 8),
    "array spec short": _header({"a": _ext(framing.EXT_ARRAY, [1, "<u1"])}, b"x"),
    "inline bad data": _header({"a": _ext(framing.EXT_INLINE_ARRAY, ["<u1", [1], 5])}),
    "unknown ext": _header({"a": _ext(99, 1)}),
    "ext not msgpack": _header({"a": msgpack.ExtType(framing.EXT_BUFFER, b"\xc1")}),
}


@pytest.mark.parametrize("frames", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_raises_protocol_error(frames):
    with pytest.raises(ProtocolError):
        framing.decode(frames)


def test_limits_are_checked_before_decoding():
    with pytest.raises(MessageTooLargeError):
        framing.decode([b"\x80"] + [b""] * 5, max_frames=4)
    with pytest.raises(MessageTooLargeError):
        framing.decode([msgpack.packb({"a": "x" * 100})], max_header=50)


def test_implementation_is_reported():
    assert framing.IMPLEMENTATION in ("compiled", "pure")
