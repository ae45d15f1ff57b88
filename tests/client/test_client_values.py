"""Tests for framerpc.client: values on the wire, numpy arrays and buffer results
through a proxy.
"""

from __future__ import annotations

import numpy as np
import pytest
from devices import DTYPES, FRAME_4K, make_array, make_bytes

from framerpc.errors import SerializationError

# -- values on the wire ---------------------------------------------------------

_VALUES = [
    (None, None),
    (True, True),
    (False, False),
    (0, 0),
    (-7, -7),
    (2**63 - 1, 2**63 - 1),
    (1.5, 1.5),
    (float("inf"), float("inf")),
    ("", ""),
    ("texte accentué", "texte accentué"),
    (b"", b""),
    (b"\x00\xff" * 10, b"\x00\xff" * 10),
    (bytearray(b"abc"), b"abc"),
    ([], []),
    ([1, "a", None, 2.5], [1, "a", None, 2.5]),
    ((1, "a"), [1, "a"]),  # tuples arrive as lists, as with JSON
    ({}, {}),
    ({"a": 1, "b": [True, None]}, {"a": 1, "b": [True, None]}),
    ({"outer": [{"inner": (1, (2, 3))}]}, {"outer": [{"inner": [1, [2, 3]]}]}),
    ({1: "int key"}, {1: "int key"}),
]


def _same(a, b) -> bool:
    """Equal and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_plain_values_round_trip(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    for value, expected in _VALUES:
        result = proxy.echo(value)
        assert _same(result, expected), f"{value!r} came back as {result!r}"


def test_large_bytes_argument_travels_as_a_read_only_memoryview(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    data = make_bytes(100_000)
    assert proxy.arg_types(data) == ["memoryview"]
    result = proxy.echo(data)
    assert isinstance(result, memoryview) and result.readonly
    assert result == data


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), 1 + 2j, {"nested": [frozenset()]}, {(1, 2): "tuple key"}],
    ids=["set", "object", "complex", "nested", "tuple-key"],
)
def test_unsupported_values_raise_type_error_before_sending(tcp_camera, connect, value):
    proxy = connect(tcp_camera.url)
    with pytest.raises(TypeError) as caught:
        proxy.echo(value)
    assert isinstance(caught.value, SerializationError)
    assert "echo" not in tcp_camera.calls  # nothing reached the server
    assert proxy.echo("next") == "next"


def test_numpy_scalars_arrive_as_python_scalars(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    args = [np.int64(3), np.float32(1.5), np.bool_(True), np.uint8(7), np.float64(2)]
    assert proxy.arg_types(*args) == ["int", "float", "bool", "int", "float"]
    assert _same(proxy.echo(args), [3, 1.5, True, 7, 2.0])


# -- numpy arrays ---------------------------------------------------------------

# 0-d, empty, small (inline in the header) and, for wide dtypes, beyond
# framing.INLINE_LIMIT (own frame).
_SHAPES = [(), (0,), (3, 0), (7,), (3, 5), (2, 3, 4), (64, 64), (8, 40, 40)]


def _check_array(result, expected: np.ndarray) -> None:
    assert isinstance(result, np.ndarray)
    assert (result.dtype, result.shape) == (expected.dtype, expected.shape)
    np.testing.assert_array_equal(result, expected)
    assert result.flags.writeable is False


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_round_trip(tcp_camera, connect, dtype):
    """As argument and result (echo), as a JSON result and as a buffer result."""
    proxy = connect(tcp_camera.url)
    for shape in _SHAPES:
        expected = make_array(shape, dtype)
        _check_array(proxy.echo(expected), expected)
        _check_array(proxy.make_array(list(shape), dtype), expected)
        buffer, info = proxy.grab(list(shape), dtype)
        _check_array(buffer, expected)
        assert info == {"shape": list(shape), "dtype": dtype}


def test_large_array_round_trip_on_every_transport(camera, connect):
    proxy = connect(camera.url)
    frame = make_array(FRAME_4K, "uint8")
    _check_array(proxy.echo(frame), frame)
    buffer, info = proxy.grab(list(FRAME_4K), "uint8")
    _check_array(buffer, frame)
    assert info == {"shape": list(FRAME_4K), "dtype": "uint8"}


@pytest.mark.parametrize(
    "make_view",
    [
        lambda: make_array((256, 64), "uint16").T,  # 32 KiB: its own frame
        lambda: make_array((256, 64), "float32")[::3, 5:50],
        lambda: make_array((6, 8), "int32").T,  # small: inline in the header
        lambda: make_array((5, 5, 2), "complex64")[:, ::2, 1],
    ],
    ids=["large-transposed", "large-sliced", "small-transposed", "small-sliced"],
)
def test_non_contiguous_array_arrives_equal_and_c_contiguous(
    tcp_camera, connect, make_view
):
    """A non-contiguous view (transposed or sliced) is copied once to C order
    when sent; it arrives equal, C-contiguous and read-only."""
    view = make_view()
    assert not view.flags.c_contiguous
    result = connect(tcp_camera.url).echo(view)
    _check_array(result, view)
    assert result.flags.c_contiguous


def test_object_arrays_raise_type_error(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    with pytest.raises(TypeError):
        proxy.echo(np.array([1, "a", None], dtype=object))
    with pytest.raises(TypeError):
        proxy.echo({"frames": [np.empty(3, dtype=object)]})
    assert "echo" not in tcp_camera.calls


# -- buffer results -------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 64 * 1024, 25_000_000], ids=["0B", "1B", "64KiB", "25MB"]
)
def test_buffer_results_arrive_as_read_only_memoryviews(tcp_camera, connect, size):
    proxy = connect(tcp_camera.url)
    expected = make_bytes(size)
    for kind in ("bytes", "bytearray", "memoryview"):
        buffer, info = proxy.read_buffer(size, kind)
        assert isinstance(buffer, memoryview) and buffer.readonly
        assert buffer.nbytes == size
        assert buffer == expected
        assert info == {"size": size, "kind": kind}


def test_buffer_result_on_every_transport(camera, connect):
    proxy = connect(camera.url)
    ok, (buffer, info) = proxy.execute("read_buffer", {"args": [70_000, "bytes"]})
    assert ok is True
    assert isinstance(buffer, memoryview) and buffer.readonly
    assert buffer == make_bytes(70_000)
    assert info == {"size": 70_000, "kind": "bytes"}
