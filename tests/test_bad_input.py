"""Bad input never stops a server, a registry or a signal receiver: the server.

Raw DEALER and REQ sockets send malformed messages of every kind listed in
the robustness issue (not msgpack, truncated, wrong types, unknown event or
version, missing fields, too many frames, dangling frame references, arrays
whose dtype and shape do not match their frame, huge declared sizes). Each
malformed message that can be answered gets an error reply naming the
problem, is logged, and a well-formed call is answered afterwards. Decoding
never unpickles anything. Oversized messages, the registry and the signal
receiver: the other tests/test_bad_input_*.py files.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from bad_input_helpers import (
    EXT_ARRAY,
    EXT_BUFFER,
    EXT_INLINE_ARRAY,
    REPLY_WAIT_MS,
    _dealer_exchange,
    _echo_frames,
    _ext,
    _logged,
    _pack,
    _req_exchange,
)
from conftest import wait_until

from framerpc import framing, protocol
from framerpc.errors import ProtocolError
from framerpc.protocol import (
    Request,
    RPCEvents,
)


def _call(rid: int, **fields: Any) -> bytes:
    """A METHOD_CALL header of ``echo`` with ``fields`` replaced or added."""
    header = {"v": 1, "e": "METHOD_CALL", "i": rid, "m": "echo", "a": [1], "k": {}}
    header.update(fields)
    return _pack(**header)


_TRUNCATED = _call(31, a=["a fairly long argument to cut in half"])[:20]


# name -> (frames after the delimiter, request id the reply echoes, error text)
SERVER_CASES: dict[str, tuple[list[bytes], int, str]] = {
    "not msgpack": ([b"\xc1\xc1 not msgpack"], -1, "not valid msgpack"),
    "truncated msgpack": ([_TRUNCATED], -1, "not valid msgpack"),
    "empty header frame": ([b""], -1, "not valid msgpack"),
    "header is a list": ([msgpack.packb([1, 2, 3])], -1, "header must be a map"),
    "header is an int": ([msgpack.packb(7)], -1, "header must be a map"),
    # wrong types in header fields
    "id is a str": ([_call("x")], -1, "request id"),
    "event is an int": ([_call(1, e=5)], 1, "unknown event 5"),
    "version is a str": ([_call(2, v="1")], 2, "unsupported protocol version '1'"),
    "method is an int": ([_call(3, m=5)], 3, "'method' must be str"),
    "args is a str": ([_call(4, a="x")], 4, "'args' must be list"),
    "kwargs is a list": ([_call(5, k=[])], 5, "'kwargs' must be dict"),
    "property name is bytes": (
        [_pack(v=1, e="PROPERTY_GET", i=6, p=b"gain")],
        6,
        "'name' must be str",
    ),
    # unknown event / version
    "unknown event": ([_call(7, e="DANCE")], 7, "unknown event 'DANCE'"),
    "not a request event": ([_call(8, e="EMIT_SIGNAL")], 8, "'EMIT_SIGNAL'"),
    "unknown version": ([_call(9, v=99)], 9, "unsupported protocol version 99"),
    # missing fields
    "no version": ([_pack(e="GET_INVENTORY", i=10)], 10, "version None"),
    "no event": ([_pack(v=1, i=11)], 11, "unknown event None"),
    "no id": ([_pack(v=1, e="GET_INVENTORY")], -1, "request id"),
    "no args": (
        [_pack(v=1, e="METHOD_CALL", i=12, m="echo", k={})],
        12,
        "lacks field 'a'",
    ),
    "no value to set": (
        [_pack(v=1, e="PROPERTY_SET", i=13, p="gain")],
        13,
        "lacks field 'x'",
    ),
    # frames
    "too many frames": (
        [_call(14), *[b"x"] * framing.MAX_FRAMES],
        14,
        f"the limit is {framing.MAX_FRAMES}",
    ),
    "reference to a missing frame": (
        [_call(15, a=[_ext(EXT_BUFFER, 3)])],
        15,
        "refers to frame 3",
    ),
    "reference to the header frame": (
        [_call(16, a=[_ext(EXT_BUFFER, 0)]), b"data"],
        16,
        "refers to frame 0",
    ),
    "frame referenced twice": (
        [_call(17, a=[_ext(EXT_BUFFER, 1), _ext(EXT_BUFFER, 1)]), b"data"],
        17,
        "referenced twice",
    ),
    "unreferenced frame": ([_call(18), b"extra"], 18, "buffer frames"),
    # arrays
    "array larger than its frame": (
        [_call(19, a=[_ext(EXT_ARRAY, [1, "<u2", [10]])]), b"\0" * 7],
        19,
        "needs 20 bytes, its frame has 7",
    ),
    "array smaller than its frame": (
        [_call(20, a=[_ext(EXT_ARRAY, [1, "<f8", [2, 2]])]), b"\0" * 40],
        20,
        "needs 32 bytes, its frame has 40",
    ),
    "inline array of the wrong size": (
        [_call(21, a=[_ext(EXT_INLINE_ARRAY, ["<i4", [3], b"\0" * 5])])],
        21,
        "needs 12 bytes",
    ),
    "object dtype": (
        [_call(22, a=[_ext(EXT_ARRAY, [1, "|O", [1]])]), b"\0" * 8],
        22,
        "is not allowed",
    ),
    "structured dtype with an object field": (
        [_call(23, a=[_ext(EXT_INLINE_ARRAY, ["i4,O", [1], b"\0" * 12])])],
        23,
        "is not allowed",
    ),
    "unknown dtype": (
        [_call(24, a=[_ext(EXT_INLINE_ARRAY, ["no-such-type", [1], b"\0"])])],
        24,
        "invalid array dtype",
    ),
    "negative dimension": (
        [_call(25, a=[_ext(EXT_INLINE_ARRAY, ["u1", [-1], b""])])],
        25,
        "invalid array shape",
    ),
    "array reference of the wrong form": (
        [_call(26, a=[_ext(EXT_ARRAY, {"frame": 1})]), b"\0"],
        26,
        "array reference must be",
    ),
    "unknown ext code": ([_call(27, a=[_ext(42, 1)])], 27, "unknown ext code 42"),
    "ext payload not msgpack": (
        [_call(28, a=[msgpack.ExtType(EXT_ARRAY, b"\xc1")])],
        28,
        "malformed ext payload",
    ),
    # huge declared sizes (nothing is allocated for them)
    "array declaring 2**80 bytes": (
        [_call(29, a=[_ext(EXT_ARRAY, [1, "u1", [2**40, 2**40]])]), b"\0" * 16],
        29,
        "needs 1208925819614629174706176 bytes, its frame has 16",
    ),
    "bin32 declaring 4 GiB": ([b"\x81\xa1x\xc6\xff\xff\xff\xffab"], -1, "msgpack"),
    "array32 declaring 2**32 items": ([b"\xdd\xff\xff\xff\xff\x01"], -1, "msgpack"),
    "map32 declaring 2**32 pairs": ([b"\xdf\xff\xff\xff\xff\x01"], -1, "msgpack"),
    "str32 declaring 4 GiB": ([b"\xdb\xff\xff\xff\xffab"], -1, "msgpack"),
    # refused by the depth limit before msgpack reads it (SocketOptions)
    "nesting 100000 deep": ([b"\x91" * 100_000], -1, "deeper than 100"),
}


def _inventory_frames(rid: int) -> list:
    return protocol.encode_request(Request(RPCEvents.GET_INVENTORY, rid))


@contextlib.contextmanager
def serving(server) -> Iterator[list[BaseException]]:
    """Run ``server.serve_forever`` in a thread that records how it ended.

    Yields the list that receives the exception that ended the loop, if any
    (a crash must fail an assertion, not escape as a thread warning).
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.serve_forever()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        server.stop_server()
        thread.join(timeout=5)
        assert not thread.is_alive(), "serve_forever did not return"


@pytest.mark.parametrize("case", list(SERVER_CASES))
def test_server_answers_a_malformed_request_with_an_error(
    tcp_camera, raw, connect, caplog, case
):
    frames, rid, text = SERVER_CASES[case]
    sock = raw(tcp_camera.url)
    with caplog.at_level(logging.WARNING, logger="framerpc.server"):
        body = _dealer_exchange(sock, frames)
        assert body is not None, "no reply to a malformed request"
        reply = protocol.decode_reply(body)
        assert (reply.ok, reply.request_id) == (False, rid)
        assert reply.error.startswith("ProtocolError: ")
        assert text in reply.error
        assert wait_until(
            lambda: _logged(caplog, "framerpc.server", "malformed request", text)
        )
    # the same socket, and a proxy, are served afterwards
    good = protocol.decode_reply(_dealer_exchange(sock, _echo_frames(77, "ok?")))
    assert (good.ok, good.request_id, good.value) == (True, 77, "ok?")
    assert connect(tcp_camera.url).add(2, 3) == 5


@pytest.mark.parametrize(
    "case",
    ["not msgpack", "unknown event", "too many frames", "array larger than its frame"],
)
def test_server_answers_a_malformed_request_from_a_req_socket(
    tcp_camera, raw, caplog, case
):
    frames, rid, text = SERVER_CASES[case]
    sock = raw(tcp_camera.url, zmq.REQ)
    with caplog.at_level(logging.WARNING, logger="framerpc.server"):
        reply = protocol.decode_reply(_req_exchange(sock, frames))
        assert (reply.ok, reply.request_id) == (False, rid)
        assert text in reply.error
        assert wait_until(lambda: _logged(caplog, "framerpc.server", text))
    # REQ went back to its send state: the next request is answered
    good = protocol.decode_reply(_req_exchange(sock, _inventory_frames(5)))
    assert (good.ok, good.request_id) == (True, 5)
    assert "echo" in good.value["json_methods"]


def test_server_survives_every_malformed_request_in_a_row(tcp_camera, raw):
    sock = raw(tcp_camera.url)
    for frames, _, _ in SERVER_CASES.values():
        sock.send_multipart([b"", *frames])
    for _ in SERVER_CASES:
        assert sock.poll(REPLY_WAIT_MS)
        reply = protocol.decode_reply(sock.recv_multipart()[1:])
        assert not reply.ok
    good = protocol.decode_reply(_dealer_exchange(sock, _echo_frames(1, [1, "x"])))
    assert (good.ok, good.value) == (True, [1, "x"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("v", np.array([1, 1]), id="v-array"),
        pytest.param("v", np.array([], np.uint8), id="v-empty-array"),
        pytest.param("v", True, id="v-bool"),
        pytest.param("v", 1.0, id="v-float"),
        pytest.param("e", [1], id="e-list"),
        pytest.param("e", {"a": 1}, id="e-map"),
        pytest.param("e", np.array([1, 2]), id="e-array"),
        pytest.param("e", b"METHOD_CALL", id="e-bytes"),
        pytest.param("i", np.array([9]), id="i-array"),
        pytest.param("m", ["echo"], id="m-list"),
    ],
)
def test_server_refuses_header_fields_of_the_wrong_type(ctx, raw, field, value):
    """Values a well-behaved decoder of msgpack can produce (arrays through
    the framing ext types, lists, maps) in the fields the server inspects."""
    from devices import CameraServer

    server = CameraServer(ctx, "tcp://127.0.0.1")
    with serving(server) as crashed:
        sock = raw(server.url)
        header = {"v": 1, "e": "METHOD_CALL", "i": 9, "m": "echo", "a": [1], "k": {}}
        header[field] = value
        sock.send_multipart([b"", *framing.encode(header)])
        # stop waiting as soon as the loop died
        assert wait_until(lambda: crashed or sock.poll(0), REPLY_WAIT_MS / 1000)
        assert crashed == [], f"serve_forever died: {crashed!r}"
        delimiter, *body = sock.recv_multipart()
        assert delimiter == b""
        reply = protocol.decode_reply(body)
        assert reply.ok is False
        assert reply.request_id == (-1 if field == "i" else 9)
        assert reply.error.startswith("ProtocolError: ")
        good = _dealer_exchange(sock, _echo_frames(10, "still there"))
        assert good is not None and protocol.decode_reply(good).ok


def test_message_without_delimiter_is_dropped_and_logged(tcp_camera, raw, caplog):
    """No reply is possible: a DEALER peer without the delimiter is not a
    framerpc client. The server logs it and goes on."""
    sock = raw(tcp_camera.url)
    with caplog.at_level(logging.WARNING, logger="framerpc.server"):
        sock.send_multipart(_echo_frames(1, "no delimiter"))
        assert wait_until(
            lambda: _logged(caplog, "framerpc.server", "without routing envelope")
        )
    # The sentinel: a reply to the first message would arrive before this one.
    good = protocol.decode_reply(_dealer_exchange(sock, _echo_frames(2, "ok")))
    assert (good.ok, good.value, good.request_id) == (True, "ok", 2)


_side_effects: list[str] = []


def _side_effect(tag: str) -> str:
    """What an unpickled payload would call."""
    _side_effects.append(tag)
    return tag


class _Exploit:
    """Pickles to a call of :func:`_side_effect`."""

    def __reduce__(self):
        return (_side_effect, ("unpickled",))


@pytest.fixture
def pickle_forbidden(monkeypatch) -> Iterator[None]:
    """Any use of pickle during the test raises (and would fail the test)."""
    _side_effects.clear()

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used to decode data from the wire")

    for name in ("loads", "load", "Unpickler", "_loads", "_load", "_Unpickler"):
        if hasattr(pickle, name):
            monkeypatch.setattr(pickle, name, forbidden)
    yield
    assert _side_effects == [], "a payload from the wire was executed"


def test_pickle_bytes_in_a_request_stay_bytes(tcp_camera, raw, pickle_forbidden):
    payload = pickle.dumps(_Exploit())
    large = payload * (framing.INLINE_LIMIT // len(payload) + 1)  # own frame
    sock = raw(tcp_camera.url)
    for value in (payload, large, {"__reduce__": payload}):
        reply = protocol.decode_reply(_dealer_exchange(sock, _echo_frames(1, value)))
        assert reply.ok
        if isinstance(value, dict):
            assert reply.value == value
        else:
            assert bytes(reply.value) == value  # bytes or a memoryview of them


@pytest.mark.parametrize("code", [EXT_BUFFER, EXT_ARRAY, EXT_INLINE_ARRAY, 0, 127])
def test_pickle_bytes_in_ext_payloads_are_refused(code, pickle_forbidden):
    header = msgpack.packb(
        {"v": 1, "x": msgpack.ExtType(code, pickle.dumps(_Exploit()))}
    )
    with pytest.raises(ProtocolError):
        framing.decode([header])


def test_object_arrays_are_refused_not_built(pickle_forbidden):
    for dtype in ("|O", "O8", "i4,O", "[('a', 'O')]"):
        ref = _ext(EXT_ARRAY, [1, dtype, [1]])
        header = msgpack.packb({"v": 1, "x": ref})
        with pytest.raises(ProtocolError):
            framing.decode([header, np.zeros(4, np.uint64).tobytes()])
