"""Property tests of the decoders (hypothesis), and the bounded fuzz harness.

* Any bytes and any frame list: ``framing.decode`` and the
  ``protocol.decode_*`` functions return or raise ``ProtocolError``, never
  anything else (another exception ends a server loop).
* Valid headers (msgpack values, bytes of every size, numpy arrays) survive
  encode -> decode unchanged; so do requests, replies, signals and registry
  messages.
* ``tests/fuzz/fuzz_decode.py`` runs for a fixed number of inputs.

No sockets here. Examples are bounded so the file runs in seconds.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from short_repr import assert_same

from framerpc import framing, protocol
from framerpc.errors import ProtocolError, SerializationError
from framerpc.protocol import (
    RegistryEvents,
    RegistryMessage,
    Reply,
    Request,
    RPCEvents,
    SignalEmission,
)

HARNESS = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_decode.py"
#: Inputs the CI run of the harness tries (a fixed number, a fixed seed).
HARNESS_RUNS = 2000
HARNESS_COMMAND = [sys.executable, str(HARNESS), f"-runs={HARNESS_RUNS}"]
#: Generous bound (s) for the harness run: catches a hang only.
HARNESS_TIMEOUT_S = 300

# A few seconds per test on a loaded 2-core machine. Failures compare
# through assert_same, whose message summarises long values.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # nothing written into the checkout
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUND_TRIP = settings(FUZZ, max_examples=200)

DECODERS = [
    framing.decode,
    protocol.decode_request,
    protocol.decode_reply,
    protocol.decode_signal,
    protocol.decode_registry,
]

# -- strategies --------------------------------------------------------------------

#: Header keys the protocol reads, so generated maps hit its checks.
KEYS = ["v", "e", "i", "m", "a", "k", "p", "x", "s", "ok", "er", "tb", "in", "pl"]
EVENTS = [e.value for e in RPCEvents] + [e.value for e in RegistryEvents]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=16),
    st.binary(max_size=16),
    st.sampled_from(EVENTS),
)


def _ext_payloads() -> st.SearchStrategy[msgpack.ExtType]:
    """Ext types of every code the framing layer knows, and some it does not,
    with payloads that are sometimes well-formed."""
    spec = st.one_of(
        st.integers(-2, 5),
        st.lists(
            st.one_of(
                st.integers(-2, 5),
                st.sampled_from(["<u2", "|u1", "<f8", "|O", "i4,i4", "U0", "bad"]),
                st.lists(st.integers(-1, 6), max_size=3),
                st.binary(max_size=24),
            ),
            max_size=4,
        ),
    )
    packed = st.one_of(spec.map(msgpack.packb), st.binary(max_size=16))
    return st.builds(msgpack.ExtType, st.integers(0, 5) | st.just(127), packed)


wire_values = st.recursive(
    st.one_of(scalars, _ext_payloads()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4),
    ),
    max_leaves=12,
)

# Any wire value in the top-level "v" and "e" fields: containers, arrays and
# ext values there once escaped as ValueError/TypeError.
_top_level_scalar = wire_values


@st.composite
def msgpack_headers(draw: st.DrawFn) -> bytes:
    """A packed msgpack map over the protocol's keys, with any values."""
    header = draw(st.dictionaries(st.sampled_from(KEYS), wire_values, max_size=8))
    for key in ("v", "e"):
        if key in header or draw(st.booleans()):
            header[key] = draw(_top_level_scalar | st.just(1))
    return msgpack.packb(header, use_bin_type=True)


frames_lists = st.tuples(
    st.one_of(st.binary(max_size=256), msgpack_headers()),
    st.lists(st.binary(max_size=64), max_size=4),
)


def _as_kind(frame: bytes, kind: str) -> Any:
    return {"bytes": frame, "bytearray": bytearray(frame), "view": memoryview(frame)}[
        kind
    ]


def _decodes_or_refuses(frames: list) -> None:
    for decode in DECODERS:
        try:
            decode(frames)
        except ProtocolError:
            pass


# -- any input: a value or ProtocolError -------------------------------------------


@FUZZ
@given(
    header=st.binary(max_size=512),
    extra=st.lists(st.binary(max_size=64), max_size=3),
    kind=st.sampled_from(["bytes", "bytearray", "view"]),
)
def test_arbitrary_bytes_decode_or_raise_protocol_error(header, extra, kind):
    _decodes_or_refuses([_as_kind(f, kind) for f in [header, *extra]])


@FUZZ
@given(frames_lists)
def test_msgpack_shaped_input_decodes_or_raises_protocol_error(frames):
    header, extra = frames
    _decodes_or_refuses([header, *extra])


def test_empty_frame_list_is_a_protocol_error():
    for decode in DECODERS:
        with pytest.raises(ProtocolError):
            decode([])


def test_the_property_can_fail():
    """The check above reports a decoder raising anything but ProtocolError."""

    def broken(frames):
        raise ValueError("not a ProtocolError")

    DECODERS.append(broken)
    try:
        with pytest.raises(ValueError):
            _decodes_or_refuses([b"\x80"])
    finally:
        DECODERS.remove(broken)


# -- round trips -------------------------------------------------------------------

_DTYPES = [
    "|u1",
    "<u2",
    ">i4",
    "<i8",
    "<f4",
    "<f8",
    "<c8",
    "|b1",
    "<U3",
    "|S4",
    "<M8[s]",
    "<m8[ms]",
]


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    large = draw(st.booleans())  # large ones travel as their own frame
    shape = draw(
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=40, max_side=80)
        if large
        else hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)
    )
    raw = draw(st.binary(min_size=dtype.itemsize, max_size=dtype.itemsize))
    count = int(np.prod(shape, dtype=np.int64))
    array = np.frombuffer(raw * count, dtype=dtype).reshape(shape).copy()
    if draw(st.booleans()) and array.ndim:
        array = array[::2]  # non-contiguous: copied once on send
    return array


def _ramp(size: int, start: int) -> bytes:
    return ((np.arange(size) + start) % 256).astype(np.uint8).tobytes()


#: Bytes large enough for their own frame (drawing 4 KiB byte by byte is slow).
large_bytes = st.builds(
    _ramp,
    st.integers(framing.INLINE_LIMIT, framing.INLINE_LIMIT * 3),
    st.integers(0, 255),
)

payload_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(
            st.characters(exclude_categories=("Cs",)), max_size=16
        ),  # see test_unencodable_values_raise_serialization_error
        st.binary(max_size=16),
        large_bytes,
        st.binary(max_size=64).map(bytearray),
        arrays(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=4) | st.integers(0, 9), inner, max_size=4),
    ),
    max_leaves=10,
)


def normalise(value: Any) -> Any:
    """What a decoded value must equal: tuples are lists, every bytes-like is
    its bytes, an array is its dtype, shape and bytes."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(value))
    if isinstance(value, (list, tuple)):
        return [normalise(item) for item in value]
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    return value


def _wire(frames: list) -> list[bytes]:
    """The frames as a peer receives them (bytes, not the sender's objects)."""
    return [bytes(memoryview(frame).cast("B")) for frame in frames]


@ROUND_TRIP
@given(st.dictionaries(st.text(max_size=4), payload_values, max_size=5))
def test_framing_round_trip(header):
    decoded = framing.decode(_wire(framing.encode(header)))
    assert_same(normalise(decoded), normalise(header), "decoded, sent")


@ROUND_TRIP
@given(
    rid=st.integers(-(2**63), 2**63 - 1),
    method=st.text(max_size=16),
    args=st.lists(payload_values, max_size=3),
    kwargs=st.dictionaries(st.text(max_size=8), payload_values, max_size=3),
)
def test_request_round_trip(rid, method, args, kwargs):
    request = Request(RPCEvents.METHOD_CALL, rid, method, args, kwargs)
    decoded = protocol.decode_request(_wire(protocol.encode_request(request)))
    assert (decoded.event, decoded.request_id, decoded.method) == (
        RPCEvents.METHOD_CALL,
        rid,
        method,
    )
    assert_same(normalise(decoded.args), normalise(args), "args")
    assert_same(normalise(decoded.kwargs), normalise(kwargs), "kwargs")


@ROUND_TRIP
@given(
    rid=st.integers(-(2**63), 2**63 - 1),
    value=payload_values,
    buffer=st.binary(max_size=64) | large_bytes | arrays(),
    info=st.dictionaries(st.text(max_size=4), payload_values, max_size=3),
)
def test_reply_round_trip(rid, value, buffer, info):
    plain = protocol.decode_reply(_wire(protocol.encode_reply(Reply(rid, True, value))))
    assert (plain.request_id, plain.ok) == (rid, True)
    assert_same(normalise(plain.value), normalise(value), "value")
    frames = protocol.encode_reply(Reply(rid, True, buffer, info), buffer_reply=True)
    decoded = protocol.decode_reply(_wire(frames))
    # a buffer reply's value always has its own frame: a view, never a copy
    assert isinstance(decoded.value, (memoryview, np.ndarray))
    assert_same(normalise(decoded.value), normalise(buffer), "buffer")
    assert_same(normalise(decoded.info), normalise(info), "info")


@ROUND_TRIP
@given(
    name=st.text(max_size=16),
    args=st.lists(payload_values, max_size=3),
    event=st.sampled_from(list(RegistryEvents)),
    payload=st.dictionaries(st.text(max_size=8), payload_values, max_size=3),
    rid=st.integers(-(2**63), 2**63 - 1),
)
def test_signal_and_registry_round_trip(name, args, event, payload, rid):
    emission = protocol.decode_signal(
        _wire(protocol.encode_signal(SignalEmission(name, args)))
    )
    assert emission.name == name
    assert_same(normalise(emission.args), normalise(args), "signal args")
    message = protocol.decode_registry(
        _wire(protocol.encode_registry(RegistryMessage(event, payload, rid)))
    )
    assert (message.event, message.request_id) == (event, rid)
    assert_same(normalise(message.payload), normalise(payload), "payload")


@pytest.mark.parametrize("value", ["\ud800", 2**64, -(2**63) - 1])
def test_unencodable_values_raise_serialization_error(value):
    with pytest.raises(SerializationError):
        framing.encode({"x": [value]})


# -- the fuzz harness --------------------------------------------------------------


def test_fuzz_harness_runs_a_fixed_number_of_inputs():
    """The CI run: hypothesis engine, fixed inputs and seed (repeatable)."""
    result = subprocess.run(
        [*HARNESS_COMMAND, "-seed=0", "--engine=hypothesis"],
        capture_output=True,
        text=True,
        timeout=HARNESS_TIMEOUT_S,
    )
    # the tail: where the crash and its input are, a few KB at most
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"{HARNESS_RUNS} inputs, no crash" in result.stdout


def test_fuzz_harness_with_atheris(tmp_path):
    pytest.importorskip(
        "atheris", reason="atheris is not installed; the hypothesis engine runs"
    )
    # crash files go to tmp_path, not into the checkout
    artifacts = f"-artifact_prefix={tmp_path}/"
    result = subprocess.run(
        [*HARNESS_COMMAND, "-seed=1", artifacts, "--engine=atheris"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HARNESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _load_harness():
    spec = importlib.util.spec_from_file_location("fuzz_decode", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fuzz_harness_reports_a_crash(monkeypatch, capsys):
    harness = _load_harness()

    def crashing(frames):
        if frames[0][:1] and frames[0][0] & 0xF0 == 0x80:  # a small map: common
            raise KeyError("planted bug")
        raise ProtocolError("refused")

    monkeypatch.setattr(harness, "decoders", lambda: [crashing])
    assert harness.main(["-runs=500", "-seed=0", "--engine=hypothesis"]) == 1
    assert "CRASH" in capsys.readouterr().out


def test_fuzz_harness_frames_and_seeds():
    harness = _load_harness()
    frames = [b"header", b"one", b"", b"x" * 4096]
    assert harness.split_frames(harness.join_frames(frames)) == frames
    assert harness.split_frames(b"") == [b""]
    for seed in harness.seed_inputs():  # the corpus is valid: it decodes
        frames = harness.split_frames(seed)
        header = framing.decode(frames)
        assert header["v"] == protocol.PROTOCOL_VERSION
    assert harness.main(["--engine=bogus"]) == 2
