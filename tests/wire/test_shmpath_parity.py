"""The compiled shared-memory hot path (``framerpc.wire._shmpath``) and its
pure twin (``framerpc.wire._shmpath_py``) behave the same: a reference
becomes the same read-only array (or the same ``ProtocolError``, its slot
released when the segment is missing or too small), the lease queues its
release when the array and its views are gone, the call and the reply
carry the same bytes, releases parse alike, the copy lands the same and a
FramePool lease becomes the same writable array.

The compiled half is skipped (with the reason) when it is not built.
"""

from __future__ import annotations

import collections
import gc
import mmap

import numpy as np
import pytest

from framerpc.errors import ProtocolError
from framerpc.wire import messages, shmpath
from framerpc.wire import shm as wire_shm


def _engine(name: str) -> dict:
    try:
        return shmpath.select_engine(name)
    except ImportError as exc:  # not built: say so
        pytest.skip(f"compiled shared-memory path not built: {exc}")


@pytest.fixture(params=["compiled", "pure"])
def engine(request: pytest.FixtureRequest) -> dict:
    return _engine(request.param)


class _Mapping:
    """What the client's AttachCache hands out: ``address`` and ``size``."""

    def __init__(self, size: int) -> None:
        self.map = mmap.mmap(-1, size)
        self.size = size
        self.address = np.frombuffer(self.map, np.uint8).ctypes.data


@pytest.fixture
def mapping() -> _Mapping:
    return _Mapping(1 << 16)


def _ref(**change) -> dict:
    fields = dict(
        segment="seg", offset=4096, nbytes=24, slot=3, generation=9, dtype="<u2"
    )
    fields["shape"] = [3, 4]
    fields.update(change)
    return {wire_shm.REF_KEY: list(fields.values())}


def test_a_reference_becomes_a_read_only_array_on_the_mapping(engine, mapping):
    np.frombuffer(mapping.map, np.uint16)[2048:2060] = np.arange(12)
    pending: collections.deque = collections.deque()
    tally = engine["Tally"]()
    arr = engine["resolve"](_ref(), lambda name: mapping, pending, tally)
    assert arr.shape == (3, 4) and arr.dtype == np.dtype("<u2")
    assert arr.ctypes.data == mapping.address + 4096  # no copy
    assert arr.tolist() == np.arange(12).reshape(3, 4).tolist()
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr.flags.writeable = True  # the lease offers no writable memory
    assert type(arr.base) is engine["Lease"]
    assert arr.base._map is mapping and arr.base._slot == (3, 9)
    assert len(tally) == 1 and not pending
    view = arr[1:]
    del arr
    gc.collect()
    assert not pending and len(tally) == 1  # a view keeps the slot
    del view
    gc.collect()
    assert list(pending) == [(3, 9)] and len(tally) == 0


def test_the_tally_lists_the_signal_slots_alive(engine, mapping):
    # a claim again names them (client.shm_signals.held): the compiled tally
    # once only counted, and the re-claim after a server restart failed
    pending: collections.deque = collections.deque()
    tally = engine["Tally"]()
    signal_slot = wire_shm.SIGNAL_SLOT_BASE + 5
    reply = engine["resolve"](_ref(), lambda name: mapping, pending, tally)
    signal = engine["resolve"](
        _ref(slot=signal_slot), lambda name: mapping, pending, tally
    )
    assert tally.signal_slots() == [(signal_slot, 9)]  # not the reply's slot
    del signal
    gc.collect()
    assert tally.signal_slots() == [] and len(tally) == 1
    del reply
    gc.collect()
    assert len(tally) == 0


def test_zero_dimensions_and_empty_arrays_resolve_alike(mapping):
    for ref in (
        _ref(shape=[], nbytes=2),
        _ref(shape=[0, 5], nbytes=0),
        _ref(shape=[2, 3, 1, 2], dtype="<f8", nbytes=96),
        _ref(shape=[7], dtype="|S3", nbytes=21),
        _ref(shape=[0, 1 << 40], nbytes=0),  # within numpy's bound
    ):
        made = [
            _engine(name)["resolve"](
                ref, lambda name: mapping, collections.deque(), _engine(name)["Tally"]()
            )
            for name in ("compiled", "pure")
        ]
        assert made[0].shape == made[1].shape and made[0].dtype == made[1].dtype
        assert made[0].tobytes() == made[1].tobytes()


BAD_REFS = {
    "not 7 fields": {wire_shm.REF_KEY: ["seg", 0, 24, 3, 9, "<u2"]},
    "no fields": {wire_shm.REF_KEY: None},
    "no key": {"other": 1},
    "segment not a str": _ref(segment=b"seg"),
    "long segment": _ref(segment="s" * 256),
    "negative offset": _ref(offset=-1),
    "float nbytes": _ref(nbytes=24.0),
    "bool slot": _ref(slot=True),
    "shape not a list": _ref(shape=(3, 4)),
    "negative dim": _ref(shape=[-3, -4]),
    "str dim": _ref(shape=["3", 4]),
    "33 dims": _ref(shape=[1] * 33, nbytes=2),
    "huge dim": _ref(shape=[0, 1 << 70], nbytes=0),
    "huge span": _ref(shape=[0] + [1 << 20] * 4, nbytes=0),
    "span at the bound": _ref(shape=[0, 1 << 61, 2], nbytes=0),
    "unknown dtype": _ref(dtype="x"),
    "object dtype": _ref(dtype="O", nbytes=96),
    "structured dtype": _ref(dtype="i4,i4", nbytes=96),
    "subarray dtype": _ref(dtype="(2,)<i4", nbytes=96),
    "zero-size dtype": _ref(dtype="S0", nbytes=0),
    "long dtype": _ref(dtype="<" + "u" * 20),
    "dtype not a str": _ref(dtype=2),
    "nbytes wrong": _ref(nbytes=25),
}


@pytest.mark.parametrize("case", sorted(BAD_REFS))
def test_a_malformed_reference_raises_the_same_error(case, mapping):
    errors = []
    for name in ("compiled", "pure"):
        eng = _engine(name)
        pending: collections.deque = collections.deque()
        tally = eng["Tally"]()
        with pytest.raises(ProtocolError) as caught:
            eng["resolve"](BAD_REFS[case], lambda name: mapping, pending, tally)
        assert not pending and len(tally) == 0  # nothing named: nothing to free
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    with pytest.raises(ProtocolError, match=errors[0][:20]):
        wire_shm.parse_ref(BAD_REFS[case])


def test_a_reference_that_is_not_a_map_fails_alike():
    for value in ([1, 2], None, "shm"):
        kinds = set()
        for name in ("compiled", "pure"):
            eng = _engine(name)
            with pytest.raises(Exception) as caught:
                eng["resolve"](
                    value, lambda n: None, collections.deque(), eng["Tally"]()
                )
            kinds.add(type(caught.value))
        assert len(kinds) == 1


@pytest.mark.parametrize("failure", [OSError("gone"), ValueError("too small")])
def test_a_segment_that_cannot_be_mapped_releases_the_slot(engine, failure):
    def lookup(name: str) -> _Mapping:
        raise failure

    pending: collections.deque = collections.deque()
    with pytest.raises(ProtocolError, match="cannot map shared-memory reply"):
        engine["resolve"](_ref(), lookup, pending, engine["Tally"]())
    assert list(pending) == [(3, 9)]


def test_a_reference_beyond_its_segment_releases_the_slot(engine):
    small = _Mapping(4096)
    pending: collections.deque = collections.deque()
    with pytest.raises(ProtocolError, match="beyond its segment"):
        engine["resolve"](_ref(), lambda name: small, pending, engine["Tally"]())
    assert list(pending) == [(3, 9)]
    with pytest.raises(ProtocolError, match="beyond its segment"):
        engine["resolve"](
            _ref(offset=1 << 70), lambda name: small, pending, engine["Tally"]()
        )


def test_a_call_carries_the_releases_as_encode_call_releasing_does(engine):
    pending = collections.deque([(1, 2), (3, 4)])
    frames, pairs = engine["call_frames"](7, "grab", [1, "x"], {"k": 2}, pending)
    assert pairs == [(1, 2), (3, 4)] and not pending
    expected = wire_shm.encode_call_releasing(7, "grab", [1, "x"], {"k": 2}, pairs)
    assert [bytes(f) for f in frames] == [bytes(f) for f in expected]


def test_a_call_takes_at_most_max_releases(engine):
    pending = collections.deque((i, i) for i in range(wire_shm.MAX_RELEASES + 5))
    _, pairs = engine["call_frames"](1, "grab", [], {}, pending)
    assert len(pairs) == wire_shm.MAX_RELEASES and len(pending) == 5


def test_an_unencodable_argument_puts_the_releases_back_first(engine):
    pending = collections.deque([(1, 2), (3, 4)])
    with pytest.raises(TypeError):
        engine["call_frames"](1, "grab", [object()], {}, pending)
    assert list(pending) == [(1, 2), (3, 4)]


@pytest.mark.parametrize("info", [{}, {"seq": 4, "ts": 1.5}])
def test_a_reference_reply_has_the_bytes_of_encode_result(engine, info):
    value = np.zeros((5, 6), "<u2")
    frames = engine["ref_reply"](11, "framerpc-x", 8192, value, 3, 9, info)
    ref = wire_shm.make_ref("framerpc-x", 8192, value.nbytes, 3, 9, value.dtype, (5, 6))
    expected = messages.encode_result(11, ref, info)
    assert [bytes(f) for f in frames] == [bytes(f) for f in expected]
    reply = messages.decode_reply(frames)
    assert wire_shm.parse_ref(reply.value).shape == (5, 6)


def test_a_reference_reply_names_each_dtype_as_dtype_str(engine):
    # the compiled twin caches dtype.str by descriptor: byte orders, new
    # structured dtypes (more than its cache holds) and the same dtypes
    # again all name what numpy says
    kinds = ["<u2", ">u2", "|u1", "<f8", ">c16", "|b1", "<M8[ms]", "<U3"]
    kinds += [np.dtype([("a", "<u1"), ("b", f"<u{n}")]) for n in (1, 2, 4, 8)] * 20
    for kind in kinds * 2:
        value = np.zeros((2, 3), kind)
        frames = engine["ref_reply"](1, "s", 0, value, 1, 1, {})
        assert wire_shm.parse_ref(messages.decode_reply(frames).value).dtype.str == (
            value.dtype.str
        )
        expected = messages.encode_result(
            1, wire_shm.make_ref("s", 0, value.nbytes, 1, 1, value.dtype, (2, 3)), {}
        )
        assert [bytes(f) for f in frames] == [bytes(f) for f in expected]


RELEASES = [
    [[1, 2], [3, 4]],
    [],
    [[1, 2], [3], "x", [1.0, 2], [True, 1]],
    list(range(3)),
    "not a list",
    {"a": 1},
    [[i, i] for i in range(wire_shm.MAX_RELEASES + 3)],
    [[wire_shm.SIGNAL_SLOT_BASE, 1], [2, 3], "x", [wire_shm.SIGNAL_SLOT_BASE - 1, 4]],
    [[wire_shm.SIGNAL_SLOT_BASE + i, i] for i in range(wire_shm.MAX_RELEASES + 1)],
    [[1 << 70, 1], [-1, 2], [7, 1 << 70]],
]


@pytest.mark.parametrize("index", range(len(RELEASES)))
def test_releases_parse_alike(engine, index):
    value = RELEASES[index]
    assert engine["parse_releases"](value) == wire_shm.parse_releases(value)


@pytest.mark.parametrize("index", range(len(RELEASES)))
def test_releases_split_by_slot_kind_alike(engine, index):
    value = RELEASES[index]
    pairs, bad = wire_shm.parse_releases(value)
    replies, signals, split_bad = engine["split_releases"](value)
    base = wire_shm.SIGNAL_SLOT_BASE
    assert replies == [pair for pair in pairs if pair[0] < base]
    assert signals == [pair for pair in pairs if pair[0] >= base]
    assert split_bad == bad


@pytest.mark.parametrize(
    "value",
    [
        np.arange(24, dtype="<u2").reshape(4, 6),
        np.arange(48, dtype=">i4").reshape(6, 8)[:, ::2],  # strided
        np.asfortranarray(np.arange(30, dtype="<f8").reshape(5, 6)),
        np.arange(10, dtype="<u1")[3:],
        np.zeros((0, 4), "<u2"),
    ],
    ids=["contiguous", "strided big-endian", "fortran", "offset view", "empty"],
)
def test_the_copy_lands_in_c_order_at_the_segment_start(engine, value):
    segment = _Mapping(4096)
    engine["copy_into"](segment, value)
    landed = np.frombuffer(segment.map, value.dtype, value.size).reshape(value.shape)
    assert np.array_equal(landed, value)
    assert bytes(segment.map[value.nbytes : value.nbytes + 8]) == b"\0" * 8


def test_an_object_array_is_never_copied_as_pointers(engine):
    value = np.array([object(), object()], dtype=object)
    with pytest.raises(ValueError):
        engine["copy_into"](_Mapping(4096), value)


class _PoolLease:
    """A ``FramePool`` lease's shape: an array interface over memory it
    keeps, and a flag set when it is collected."""

    def __init__(self, storage: np.ndarray, shape: tuple, kind: np.dtype) -> None:
        self.storage = storage
        self.gone: list[bool] = []
        self.__array_interface__ = {
            "version": 3,
            "shape": shape,
            "typestr": kind.str,
            "data": (storage.ctypes.data, False),
            "strides": None,
        }

    def __del__(self) -> None:
        self.gone.append(True)


@pytest.mark.parametrize(
    "shape, dtype",
    [((2160, 3840, 3), "|u1"), ((7,), ">f8"), ((0, 5), "<u2"), ((), "<i4")],
    ids=["frame", "big-endian", "empty", "scalar"],
)
def test_a_lease_array_is_its_interface_writable_based_on_the_lease(
    engine, shape, dtype
):
    kind = np.dtype(dtype)
    storage = np.zeros(max(1, int(np.prod(shape)) * kind.itemsize), np.uint8)
    lease = _PoolLease(storage, shape, kind)
    gone = lease.gone
    arr = engine["lease_array"](lease, kind, shape, storage.ctypes.data)
    expected = np.asarray(lease)
    assert arr.shape == expected.shape and arr.dtype == expected.dtype
    assert arr.ctypes.data == storage.ctypes.data  # no copy
    assert arr.flags.writeable and arr.flags.c_contiguous and arr.flags.aligned
    assert arr.base is lease
    arr[...] = 1
    assert np.array_equal(expected, np.ones(shape, kind))
    view = arr.reshape(-1)[1:] if arr.size else arr.reshape(-1)
    del lease, arr, expected
    gc.collect()
    assert not gone  # a view keeps the lease
    del view
    gc.collect()
    assert gone == [True]
