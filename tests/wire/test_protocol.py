"""The protocol engine alone: requests, replies, signals and registry
messages to frames and back, without ZeroMQ."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from framerpc import protocol
from framerpc.errors import ProtocolError
from framerpc.protocol import (
    RegistryEvents,
    RegistryMessage,
    Reply,
    Request,
    RPCEvents,
    SignalEmission,
)

REQUESTS = {
    "inventory": Request(RPCEvents.GET_INVENTORY, 1),
    "stop": Request(RPCEvents.STOP_SERVER, 2),
    "signals": Request(RPCEvents.INIT_SIGNALS_HANDLING, 3, name="token"),
    "call": Request(RPCEvents.METHOD_CALL, 4, "grab", [1, "a"], {"k": [2.5]}),
    "get": Request(RPCEvents.PROPERTY_GET, 5, name="exposure"),
    "set": Request(RPCEvents.PROPERTY_SET, 6, name="exposure", value={"us": 10}),
}


@pytest.mark.parametrize("request_", REQUESTS.values(), ids=REQUESTS.keys())
def test_request_round_trip(request_):
    assert protocol.decode_request(protocol.encode_request(request_)) == request_


def test_encode_call_is_encode_request_of_a_method_call():
    request = REQUESTS["call"]
    assert protocol.encode_call(
        request.request_id, request.method, request.args, request.kwargs
    ) == protocol.encode_request(request)
    # the generic key order, which the hot path writes out by hand
    header = msgpack.unpackb(protocol.encode_request(request)[0])
    assert list(header) == ["v", "e", "i", "m", "a", "k"]


@pytest.mark.parametrize(
    "reply, buffer_reply",
    [
        (Reply(7, True, [1, "x"]), False),
        (Reply(7, True, b"frame", {"w": 1}), True),
        (Reply(7, True, None, {}), False),
    ],
)
def test_encode_result_is_encode_reply_of_a_success(reply, buffer_reply):
    direct = protocol.encode_result(
        reply.request_id, reply.value, reply.info, buffer_reply
    )
    assert direct == protocol.encode_reply(reply, buffer_reply)


def test_request_with_array_argument():
    frame = np.arange(40000, dtype=np.uint16).reshape(40, 1000)
    request = Request(RPCEvents.METHOD_CALL, 9, "show", [frame], {})
    frames = protocol.encode_request(request)
    assert len(frames) == 2 and frames[1] is frame
    got = protocol.decode_request(frames)
    np.testing.assert_array_equal(got.args[0], frame)


def test_reply_round_trip():
    ok = Reply(7, True, [1, "x"])
    assert protocol.decode_reply(protocol.encode_reply(ok)) == ok
    err = Reply(8, False, error="ValueError: no", traceback="Traceback...")
    assert protocol.decode_reply(protocol.encode_reply(err)) == err


@pytest.mark.parametrize("payload", [b"", b"1", bytes(70000)])
def test_buffer_reply_always_has_its_own_frame(payload):
    frames = protocol.encode_reply(Reply(3, True, payload, {"w": 1}), buffer_reply=True)
    assert len(frames) == 2
    reply = protocol.decode_reply(frames)
    assert isinstance(reply.value, memoryview) and reply.value.tobytes() == payload
    assert reply.info == {"w": 1}


def test_signal_round_trip():
    emission = SignalEmission("frame_ready", [1, "a", None])
    assert protocol.decode_signal(protocol.encode_signal(emission)) == emission


def test_registry_round_trip():
    message = RegistryMessage(RegistryEvents.REGISTER, {"name": "cam"}, 12)
    assert protocol.decode_registry(protocol.encode_registry(message)) == message


def _frames(header):
    return [msgpack.packb(header)]


BAD_REQUESTS = {
    "no version": {"e": "GET_INVENTORY", "i": 1},
    "wrong version": {"v": 99, "e": "GET_INVENTORY", "i": 1},
    "unknown event": {"v": 1, "e": "DANCE", "i": 1},
    "signal event": {"v": 1, "e": "EMIT_SIGNAL", "i": 1},
    "id not int": {"v": 1, "e": "GET_INVENTORY", "i": "1"},
    "missing method": {"v": 1, "e": "METHOD_CALL", "i": 1, "a": [], "k": {}},
    "args not list": {"v": 1, "e": "METHOD_CALL", "i": 1, "m": "f", "a": 1, "k": {}},
    "kwargs not map": {"v": 1, "e": "METHOD_CALL", "i": 1, "m": "f", "a": [], "k": []},
    "method not str": {"v": 1, "e": "METHOD_CALL", "i": 1, "m": 3, "a": [], "k": {}},
    "set without value": {"v": 1, "e": "PROPERTY_SET", "i": 1, "p": "x"},
}


@pytest.mark.parametrize("header", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_raise_protocol_error(header):
    with pytest.raises(ProtocolError):
        protocol.decode_request(_frames(header))


@pytest.mark.parametrize(
    "header",
    [
        {"v": 1, "i": "x", "ok": True},
        {"v": 1, "i": 1, "ok": 1},
        {"v": 1, "i": 1, "ok": True, "in": [1]},
    ],
)
def test_bad_replies_raise_protocol_error(header):
    with pytest.raises(ProtocolError):
        protocol.decode_reply(_frames(header))


@pytest.mark.parametrize(
    "header",
    [
        {"v": 1, "e": "METHOD_CALL", "s": "x", "x": []},
        {"v": 1, "e": "EMIT_SIGNAL", "s": 1, "x": []},
        {"v": 1, "e": "EMIT_SIGNAL", "s": "x", "x": 1},
    ],
)
def test_bad_signals_raise_protocol_error(header):
    with pytest.raises(ProtocolError):
        protocol.decode_signal(_frames(header))


@pytest.mark.parametrize(
    "header",
    [
        {"v": 1, "e": "NOPE", "pl": {}},
        {"v": 1, "e": "REGISTER", "pl": []},
        {"v": 1, "e": "REGISTER", "pl": {}, "i": "1"},
    ],
)
def test_bad_registry_messages_raise_protocol_error(header):
    with pytest.raises(ProtocolError):
        protocol.decode_registry(_frames(header))


def test_request_rejects_non_request_event():
    with pytest.raises(ProtocolError):
        Request(RPCEvents.EMIT_SIGNAL, 1)


def test_legacy_frames_are_told_apart():
    assert protocol.is_legacy_frame(b'{"event": "GET_INVENTORY"}')
    assert not protocol.is_legacy_frame(protocol.encode_request(REQUESTS["call"])[0])
    assert not protocol.is_legacy_frame(b"")


def test_events_are_str_enums():
    assert RPCEvents.METHOD_CALL == "METHOD_CALL"
    assert isinstance(RPCEvents.STOP_SERVER, str)
