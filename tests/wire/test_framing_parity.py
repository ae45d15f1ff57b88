"""The compiled framing layer and its pure-Python twin behave the same.

Skipped (with the reason) when the compiled module is not built; CI builds
it, so there the comparison always runs. The compiled engine's own msgpack
reader and writer for small headers: test_framing_parity_msgpack.py.
"""

from __future__ import annotations

import importlib
import threading

import msgpack
import numpy as np
import pytest
from engines import once_per_suite
from framing_parity_helpers import LIMIT, _as_bytes, _decoded, _encoded
from hypothesis import given, settings
from hypothesis import strategies as st
from short_repr import assert_same

from framerpc.errors import ProtocolError, SerializationError
from framerpc.wire import _framing_py as pure
from framerpc.wire._framing_common import OutOfBand

pytestmark = once_per_suite

try:
    compiled = importlib.import_module("framerpc.wire._framing")
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(f"compiled framing layer not built: {exc}", allow_module_level=True)

DTYPES = ["u1", "<u2", "<i4", "<f4", "<f8", "?", "<c8"]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.lists(st.integers(0, 40), max_size=3))
    count = int(np.prod(shape)) if shape else 1
    # A few items repeated: drawing a 40x40x40 array byte by byte takes
    # seconds per example, and its repr in a failure report megabytes.
    items = draw(st.binary(min_size=dtype.itemsize, max_size=4 * dtype.itemsize))
    items = items[: len(items) // dtype.itemsize * dtype.itemsize]
    repeat = -(-count // (len(items) // dtype.itemsize))
    data = (items * repeat)[: count * dtype.itemsize]
    return np.frombuffer(data, dtype=dtype).reshape(shape)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-40, 300),  # the wide range above seldom draws these
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


def test_both_engines_export_the_same_names():
    assert sorted(pure.__all__) == sorted(compiled.__all__)
    for name in pure.__all__:
        assert hasattr(compiled, name)
    assert compiled.OutOfBand is pure.OutOfBand  # shared, not duplicated


# Budgets (max_examples) are sized so that each property test runs in a few
# seconds on a loaded 2-core machine; the profile in conftest.py sets the
# rest (no deadline, short reports). Comparisons go through assert_same,
# whose failure message summarises frames instead of printing megabytes.
@settings(max_examples=200)
@given(headers)
def test_identical_frames_for_the_same_header(header):
    frames_pure, frames_compiled = pure.encode(header), compiled.encode(header)
    assert_same(
        [_as_bytes(f) for f in frames_pure],
        [_as_bytes(f) for f in frames_compiled],
        "frames (pure, compiled)",
    )


@settings(max_examples=150)
@given(headers)
def test_identical_decoding(header):
    frames = [_as_bytes(f) for f in pure.encode(header)]
    again_pure = pure.encode(pure.decode(frames))
    again_compiled = pure.encode(compiled.decode(frames))
    assert_same(
        [_as_bytes(f) for f in again_pure],
        [_as_bytes(f) for f in again_compiled],
        "re-encoded decodings (pure, compiled)",
    )


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_identical_errors_on_garbage(frames):
    outcomes = []
    for engine in (pure, compiled):
        try:
            decoded = pure.encode(engine.decode(frames))
            outcomes.append(("ok", [_as_bytes(f) for f in decoded]))
        except ProtocolError as exc:
            outcomes.append(("error", type(exc)))
    assert_same(outcomes[0], outcomes[1], "outcomes (pure, compiled)")


@pytest.mark.parametrize("value", [{1, 2}, object(), np.array([object()])])
def test_same_serialization_errors(value):
    for engine in (pure, compiled):
        with pytest.raises(SerializationError):
            engine.encode({"v": value})


def _shares_frame(arr: np.ndarray, frame: bytes) -> bool:
    return np.shares_memory(arr, np.frombuffer(frame, dtype=np.uint8))


@settings(max_examples=200)
@given(
    st.sampled_from([*DTYPES, "<M8[s]", "S3", "<U2"]),
    st.lists(st.integers(0, 5), max_size=10),
)
def test_identical_arrays_over_frames(dtype, shape):
    """Out-of-band arrays (the compiled engine reads the usual references
    itself, and caches dtypes) decode the same, without a copy."""
    arr = np.zeros(shape, dtype=dtype)
    frames = [_as_bytes(f) for f in pure.encode({"x": arr}, limit=0)]
    for _ in range(2):  # the second decode finds the dtype cached
        got = [engine.decode(frames)["x"] for engine in (pure, compiled)]
        for out in got:
            assert out.dtype == arr.dtype and out.shape == arr.shape
            assert not out.flags.writeable
            assert out.size == 0 or _shares_frame(out, frames[1])
        np.testing.assert_array_equal(got[0], got[1])


def _ext_header(code: int, spec) -> bytes:
    return msgpack.packb({"x": msgpack.ExtType(code, msgpack.packb(spec))})


_FRAME_12 = bytes(12)
BAD_REFERENCES = {
    "size mismatch": ([_ext_header(2, [1, "<u2", [5]]), _FRAME_12]),
    "frame 0": ([_ext_header(2, [0, "<u2", [6]]), _FRAME_12]),
    "frame out of range": ([_ext_header(2, [2, "<u2", [6]]), _FRAME_12]),
    "frame twice": (
        [
            msgpack.packb(
                {
                    "x": msgpack.ExtType(2, msgpack.packb([1, "<u2", [6]])),
                    "y": msgpack.ExtType(1, msgpack.packb(1)),
                }
            ),
            _FRAME_12,
        ]
    ),
    "overflowing shape": ([_ext_header(2, [1, "<u2", [2**32 - 1] * 8]), _FRAME_12]),
    "object dtype": ([_ext_header(2, [1, "O", [1]]), bytes(8)]),
    "unknown dtype": ([_ext_header(2, [1, "<zz", [6]]), _FRAME_12]),
    "negative dimension": ([_ext_header(2, [1, "<u2", [-6]]), _FRAME_12]),
    "too many dimensions": ([_ext_header(2, [1, "<u2", [1] * 33]), bytes(2)]),
    "buffer out of range": ([_ext_header(1, 3), _FRAME_12]),
    "buffer frame 0": ([_ext_header(1, 0), _FRAME_12]),
}


@pytest.mark.parametrize("frames", BAD_REFERENCES.values(), ids=BAD_REFERENCES)
def test_identical_errors_on_bad_references(frames):
    # prime the compiled engine's dtype cache, so its own reader runs
    good = [_ext_header(2, [1, "<u2", [6]]), _FRAME_12]
    compiled.decode(good)
    messages = []
    for engine in (pure, compiled):
        with pytest.raises(ProtocolError) as info:
            engine.decode(frames)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((4, 2), np.uint8),  # an item is not a byte
        memoryview(bytes(range(8)))[::2],  # strided
        memoryview(bytes(range(4)))[::-1],  # backwards
        memoryview(np.zeros((2, 4), np.uint16)),
    ],
    ids=["2-d array", "strided view", "reversed view", "2-d view"],
)
def test_identical_outcomes_on_frames_that_are_not_bytes(frame):
    """The compiled reader measures frames in bytes and needs them
    contiguous, as the shared path does."""
    compiled.decode([_ext_header(2, [1, "|u1", [4]]), bytes(4)])  # cache |u1
    frames = [_ext_header(2, [1, "|u1", [4]]), frame]
    outcomes = []
    for engine in (pure, compiled):
        try:
            outcomes.append(("ok", engine.decode(frames)["x"].tobytes()))
        except ProtocolError as exc:
            outcomes.append(("error", str(exc)))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    "shape", [(0, 200), (0, 70000), (0, 2**32 - 1), (0, 2**32), (1,) * 8, (1,) * 9]
)
def test_identical_references_for_large_dimensions(shape):
    """Every msgpack int width of the hand-written reference."""
    header = {"x": OutOfBand(np.zeros(shape, np.uint8))}
    assert pure.encode(header)[0] == compiled.encode(header)[0]


def test_identical_references_past_frame_127():
    header = {"x": [np.zeros(1, np.uint8) for _ in range(300)]}
    frames_pure, frames_compiled = pure.encode(header, 0), compiled.encode(header, 0)
    assert frames_pure[0] == frames_compiled[0]
    assert len(compiled.decode(frames_compiled)["x"]) == 300


def test_a_failed_pack_leaves_the_thread_s_packer_usable():
    with pytest.raises(SerializationError):
        compiled.encode({"x": "\ud800"})  # a lone surrogate
    assert compiled.encode({"x": "ok"}) == pure.encode({"x": "ok"})


def test_threads_encode_side_by_side():
    headers = [{"n": n, "s": "x" * n} for n in range(300)]
    expected = [pure.encode(h)[0] for h in headers]
    results: dict[int, list] = {}

    def run(key):
        results[key] = [compiled.encode(h)[0] for h in headers]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[k] == expected for k in range(4))


# -- found by review: each of these failed on the build before its fix ------
def _run_isolated(code: str) -> str:
    """Run ``code`` in a fresh interpreter: a crash must fail one test only."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_identical_outcomes_on_a_header_of_multi_byte_items():
    # msgpack refuses a header whose items are not bytes; so must the reader
    for head in (
        memoryview(b"\x81\xa1a\x01").cast("I"),
        np.frombuffer(b"\x81\xa1a\x01", "<u2"),
    ):
        assert _decoded(compiled, [head]) == _decoded(pure, [head])


def test_a_subarray_dtype_does_not_teach_the_reader_its_base():
    """ "(2,)<i4" decodes to int32 arrays of one more dimension: once seen,
    it must not make a later message read as plain int32."""
    spec = msgpack.packb([1, "(2,)<i4", [0]])
    first = [msgpack.packb({"a": msgpack.ExtType(2, spec)}), b""]
    assert _decoded(compiled, first) == _decoded(pure, first)
    spec = msgpack.packb([1, "(2,)<i4", [2]])
    second = [msgpack.packb({"a": msgpack.ExtType(2, spec)}), b"\1\0\0\0\2\0\0\0"]
    assert _decoded(compiled, second) == _decoded(pure, second)


def test_a_dict_subclass_header_encodes_alike():
    from collections import OrderedDict

    header = OrderedDict(a=1, b=[2.5, "x"])
    assert _encoded(compiled, header, LIMIT) == _encoded(pure, header, LIMIT)


def test_deep_nesting_raises_recursion_error_instead_of_crashing():
    out = _run_isolated(
        "from framerpc.wire import _framing as c\n"
        "v = []\n"
        "for _ in range(200_000): v = [v]\n"
        "try:\n"
        "    c.encode({'x': v})\n"
        "except RecursionError:\n"
        "    print('RecursionError')\n"
    )
    assert out.strip() == "RecursionError"


def test_a_list_emptied_by_a_finalizer_while_it_is_written():
    """Writing an array may free the last array dtype sent, and run Python
    code (here a __del__ in the dtype's metadata) that empties the list
    being written: the writer must notice, not read past the list."""
    out = _run_isolated(
        "import numpy as np\n"
        "from framerpc.wire import _framing as c, _framing_py as p\n"
        "items = []\n"
        "class Emptier:\n"
        "    def __del__(self):\n"
        "        items.clear()\n"
        "dtype = np.dtype('<i4', metadata={'k': Emptier()})\n"
        "c.encode({'x': np.zeros(10_000, dtype=dtype)})\n"
        "del dtype\n"
        "items.extend([np.zeros(10_000, '<f8'), *range(100)])\n"
        "frames = c.encode({'l': items})\n"
        "again = p.encode({'l': items})\n"
        "assert [bytes(f) for f in frames] == [bytes(f) for f in again]\n"
        "print(len(items))\n"
    )
    assert out.strip() == "0"
