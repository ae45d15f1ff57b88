"""Interoperability with the older JSON protocol: the sans-I/O codec alone.

The codec of :mod:`framerpc.legacy`, one case table per message kind. The
tests against the independent peers of ``legacy_peers`` (written from
legacy-protocol.md with plain pyzmq and json): every row of the spec's
tables, the error rows, signals both ways, registration both ways and
protocol detection, are in the other tests/test_legacy_*.py files.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from devices import make_array, make_bytes

from framerpc.errors import ProtocolError, SerializationError
from framerpc.protocol import (
    PROTOCOL_VERSION,
    RegistryEvents,
    RegistryMessage,
    Reply,
    Request,
    RPCEvents,
    SignalEmission,
)
from framerpc.wire import json_codec as legacy


def _json(frame: Any) -> Any:
    return json.loads(bytes(frame))


# == the codec, without sockets ================================================

REQUESTS = {
    "inventory": (Request(RPCEvents.GET_INVENTORY, 0), {"event": "GET_INVENTORY"}),
    "signals": (
        Request(RPCEvents.INIT_SIGNALS_HANDLING, 0),
        {"event": "INIT_SIGNALS_HANDLING"},
    ),
    "call": (
        Request(RPCEvents.METHOD_CALL, 0, "add", [1, "a", None], {"scale": 2.5}),
        {
            "event": "METHOD_CALL",
            "method": "add",
            "params": {"args": [1, "a", None], "kwargs": {"scale": 2.5}},
        },
    ),
    "get": (
        Request(RPCEvents.PROPERTY_GET, 0, name="gain"),
        {"event": "PROPERTY_GET", "property": "gain"},
    ),
    "set": (
        Request(RPCEvents.PROPERTY_SET, 0, name="gain", value={"a": [1, None]}),
        {"event": "PROPERTY_SET", "property": "gain", "value": {"a": [1, None]}},
    ),
    "stop": (Request(RPCEvents.STOP_SERVER, 0), {"event": "STOP_SERVER"}),
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_request_encodes_and_decodes_as_the_table_says(case):
    request, message = REQUESTS[case]
    assert _json(legacy.encode_request(request)) == message
    assert legacy.decode_request([json.dumps(message).encode()]) == request


def test_method_call_params_default_to_no_arguments():
    for message in (
        {"event": "METHOD_CALL", "method": "m"},
        {"event": "METHOD_CALL", "method": "m", "params": {}},
    ):
        request = legacy.decode_request([json.dumps(message).encode()])
        assert (request.method, request.args, request.kwargs) == ("m", [], {})


def test_request_arguments_json_cannot_carry_raise_before_sending():
    for value, type_name in ((b"x", "bytes"), (np.zeros(2), "ndarray"), ({1}, "set")):
        request = Request(RPCEvents.METHOD_CALL, 0, "echo", [value], {})
        with pytest.raises(SerializationError, match=type_name):
            legacy.encode_request(request)
    assert issubclass(SerializationError, TypeError)  # what callers catch


BAD_REQUESTS = {
    "not json": ([b"{nope"], "not JSON"),
    "not an object": ([b"[1, 2]"], "must be an object"),
    "not utf-8": ([b'{"\xff": 1}'], "not JSON"),
    "two frames": ([b'{"event": "STOP_SERVER"}', b"x"], "one frame"),
    "no event": ([b"{}"], "unknown event None"),
    "unknown event": ([b'{"event": "DANCE"}'], "unknown event 'DANCE'"),
    "emission": ([b'{"event": "EMIT_SIGNAL"}'], "not a request"),
    "no method": ([b'{"event": "METHOD_CALL"}'], "lacks field 'method'"),
    "method not str": ([b'{"event": "METHOD_CALL", "method": 1}'], "must be str"),
    "params not object": (
        [b'{"event": "METHOD_CALL", "method": "m", "params": []}'],
        "'params' must be an object",
    ),
    "args not list": (
        [b'{"event": "METHOD_CALL", "method": "m", "params": {"args": 1}}'],
        "args list",
    ),
    "no property": ([b'{"event": "PROPERTY_GET"}'], "lacks field 'property'"),
    "no value": (
        [b'{"event": "PROPERTY_SET", "property": "gain"}'],
        "lacks field 'value'",
    ),
    # above 64 KiB the depth limit refuses it before json.loads reads it
    "deep nesting": ([b'{"a": ' + b"[" * 100_000], "deeper than 100"),
    "deep nesting, small": ([b'{"a": ' + b"[" * 50_000], "not JSON"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_malformed_requests_raise_protocol_error(case):
    frames, text = BAD_REQUESTS[case]
    with pytest.raises(ProtocolError, match=text):
        legacy.decode_request(frames)


SERVER_REPLIES = {
    "json result": (
        RPCEvents.METHOD_CALL,
        Reply(0, True, (1, [2.5, None], {"k": "v"})),
        {"success": True, "result": [1, [2.5, None], {"k": "v"}]},
    ),
    "numpy scalars": (
        RPCEvents.METHOD_CALL,
        Reply(0, True, [np.int64(3), np.float32(0.5), np.bool_(True)]),
        {"success": True, "result": [3, 0.5, True]},
    ),
    "error": (
        RPCEvents.METHOD_CALL,
        Reply(0, False, error="ValueError: boom", traceback="Traceback..."),
        {"success": False, "error": "ValueError: boom", "traceback": "Traceback..."},
    ),
    "get": (RPCEvents.PROPERTY_GET, Reply(0, True, 5), {"success": True, "value": 5}),
    "get error": (
        RPCEvents.PROPERTY_GET,
        Reply(0, False, error="Property zoom not found"),
        {"success": False, "error": "Property zoom not found", "traceback": ""},
    ),
    "set": (RPCEvents.PROPERTY_SET, Reply(0, True), {"success": True}),
    "stop": (RPCEvents.STOP_SERVER, Reply(0, True), {"success": True}),
}


@pytest.mark.parametrize("case", list(SERVER_REPLIES))
def test_server_replies_as_the_table_says(case):
    event, reply, message = SERVER_REPLIES[case]
    frames = legacy.encode_reply(event, reply)
    assert len(frames) == 1 and _json(frames[0]) == message


def test_special_server_replies():
    assert _json(legacy.method_not_implemented("focus")[0]) == {
        "success": False,
        "error": "Method focus not implemented",
    }
    assert _json(legacy.encode_signal_port(10500)[0]) == {
        "success": True,
        "signal_port": 10500,
    }
    native = {
        "json_methods": {"add": 500, "wait": None},
        "buffer_methods": {"grab": 5000},
        "signals": ["frame_ready"],
        "properties": ["gain"],
        "name": "cam",
        "signal_url": "tcp://127.0.0.1:4000",
        "signal_port": 4000,
    }
    inventory = _json(legacy.encode_inventory(native)[0])
    assert inventory == {
        "json_methods": {"add": 500, "wait": None},
        "buffer_methods": {"grab": 5000},
        "signals": ["frame_ready"],
        "properties": ["gain"],
        "name": "cam",
        "framerpc": PROTOCOL_VERSION,
        "signal_url": "tcp://127.0.0.1:4000",
    }
    assert legacy.is_framerpc_inventory(inventory)
    assert not legacy.is_framerpc_inventory({**inventory, "framerpc": 99})
    del inventory["framerpc"]
    assert not legacy.is_framerpc_inventory(inventory)


@pytest.mark.parametrize(
    "value",
    [
        make_array([3, 4], "uint16"),
        make_array([6, 8], "float32")[::2, 1::3],  # not contiguous
        np.arange(4).astype("datetime64[s]"),  # no buffer interface of its own
        make_array([0], "uint8"),
        b"raw bytes",
        bytearray(b"raw"),
        memoryview(make_bytes(64))[::2],  # not contiguous
    ],
    ids=["array", "strided", "datetime", "empty", "bytes", "bytearray", "view"],
)
def test_buffer_reply_is_info_then_raw_bytes(value):
    info = {"shape": [3, 4], "note": (1, 2)}
    frames = legacy.encode_reply(
        RPCEvents.METHOD_CALL, Reply(0, True, value, info), True
    )
    assert len(frames) == 2
    assert _json(frames[0]) == {"shape": [3, 4], "note": [1, 2]}
    expected = value.tobytes() if not isinstance(value, bytes | bytearray) else value
    assert memoryview(frames[1]).tobytes() == bytes(expected)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (b"abc", "bytes"),
        (np.zeros(3), "ndarray"),
        ({1, 2}, "set"),
        (1j, "complex"),
        (object(), "object"),
        ({(1, 2): "tuple key"}, "tuple"),
    ],
)
def test_values_json_cannot_carry_give_an_error_naming_their_type(value, type_name):
    for event in (RPCEvents.METHOD_CALL, RPCEvents.PROPERTY_GET):
        frames = legacy.encode_reply(event, Reply(0, True, [value]))
        message = _json(frames[0])
        assert message["success"] is False and message["traceback"] == ""
        assert "SerializationError" in message["error"]
        assert type_name in message["error"]
    buffer_info = Reply(0, True, b"data", {"bad": value})
    message = _json(legacy.encode_reply(RPCEvents.METHOD_CALL, buffer_info, True)[0])
    assert message["success"] is False and type_name in message["error"]


def test_object_arrays_cannot_be_a_buffer_reply():
    reply = Reply(0, True, np.array([object()]), {})
    message = _json(legacy.encode_reply(RPCEvents.METHOD_CALL, reply, True)[0])
    assert message["success"] is False and "object" in message["error"]


_INVENTORY = {
    "json_methods": {"add": 500},
    "buffer_methods": {"grab": None},
    "signals": ["count"],
    "properties": ["gain"],
    "name": "legacy-cam",
}
CLIENT_REPLIES = {
    "inventory": (
        Request(RPCEvents.GET_INVENTORY, 0),
        [json.dumps(_INVENTORY).encode()],
        False,
        Reply(0, True, _INVENTORY),
    ),
    "signal port": (
        Request(RPCEvents.INIT_SIGNALS_HANDLING, 0),
        [b'{"success": true, "signal_port": 10042}'],
        False,
        Reply(0, True, 10042),
    ),
    "no signal port": (
        Request(RPCEvents.INIT_SIGNALS_HANDLING, 0),
        [b'{"success": false, "error": "no port"}'],
        False,
        Reply(0, False, error="no port"),
    ),
    "json result": (
        REQUESTS["call"][0],
        [b'{"success": true, "result": [1, 2]}'],
        False,
        Reply(0, True, [1, 2]),
    ),
    "json error": (
        REQUESTS["call"][0],
        [b'{"success": false, "error": "boom", "traceback": "tb"}'],
        False,
        Reply(0, False, error="boom", traceback="tb"),
    ),
    "not implemented": (
        REQUESTS["call"][0],
        [b'{"success": false, "error": "Method add not implemented"}'],
        False,
        Reply(0, False, error="Method add not implemented"),
    ),
    "buffer error": (
        REQUESTS["call"][0],
        [b'{"success": false, "error": "boom", "traceback": "tb"}'],
        True,
        Reply(0, False, error="boom", traceback="tb"),
    ),
    "get": (
        REQUESTS["get"][0],
        [b'{"success": true, "value": "hdr"}'],
        False,
        Reply(0, True, "hdr"),
    ),
    "get error": (
        REQUESTS["get"][0],
        [b'{"success": false, "error": "no", "traceback": "tb"}'],
        False,
        Reply(0, False, error="no", traceback="tb"),
    ),
    "set": (REQUESTS["set"][0], [b'{"success": true}'], False, Reply(0, True)),
    "set error": (
        REQUESTS["set"][0],
        [b'{"success": false, "error": "no", "traceback": "tb"}'],
        False,
        Reply(0, False, error="no", traceback="tb"),
    ),
    "stop": (REQUESTS["stop"][0], [b'{"success": true}'], False, Reply(0, True)),
}


@pytest.mark.parametrize("case", list(CLIENT_REPLIES))
def test_client_reads_replies_as_the_table_says(case):
    request, frames, buffer_method, expected = CLIENT_REPLIES[case]
    assert legacy.decode_reply(request, frames, buffer_method) == expected


def test_buffer_reply_decodes_to_a_read_only_view_and_the_info():
    frames = [b'{"size": 3}', bytearray(b"abc")]
    reply = legacy.decode_reply(REQUESTS["call"][0], frames, buffer_method=True)
    assert reply.ok and reply.info == {"size": 3}
    assert isinstance(reply.value, memoryview) and reply.value.readonly
    assert reply.value == b"abc"


BAD_REPLIES = {
    "empty": (REQUESTS["stop"][0], [], False, "empty reply"),
    "not json": (REQUESTS["stop"][0], [b"{nope"], False, "not JSON"),
    "no success": (REQUESTS["call"][0], [b'{"result": 1}'], False, "lacks 'success'"),
    "inventory without methods": (
        REQUESTS["inventory"][0],
        [b'{"signals": [], "properties": []}'],
        False,
        "json_methods",
    ),
    "inventory name": (
        REQUESTS["inventory"][0],
        [json.dumps({**_INVENTORY, "name": 5}).encode()],
        False,
        "name",
    ),
    "buffer without data": (
        REQUESTS["call"][0],
        [b'{"success": true}'],
        True,
        "data frame",
    ),
    "three frames": (REQUESTS["call"][0], [b"{}", b"a", b"b"], True, "one-frame"),
}


@pytest.mark.parametrize("case", list(BAD_REPLIES))
def test_malformed_replies_raise_protocol_error(case):
    request, frames, buffer_method, text = BAD_REPLIES[case]
    with pytest.raises(ProtocolError, match=text):
        legacy.decode_reply(request, frames, buffer_method)


def test_signal_emission_encodes_and_decodes():
    frame = legacy.encode_signal(SignalEmission("count", [1, (2, "b")]))
    assert _json(frame) == {
        "event": "EMIT_SIGNAL",
        "signal": "count",
        "args": [1, [2, "b"]],
        "blocking": False,
    }
    assert legacy.decode_signal(frame) == SignalEmission("count", [1, [2, "b"]])
    assert legacy.decode_signal(b'{"event": "EMIT_SIGNAL", "signal": "s"}').args == []
    for bad in (b'{"event": "METHOD_CALL", "signal": "s"}', b'{"signal": "s"}'):
        with pytest.raises(ProtocolError):
            legacy.decode_signal(bad)
    with pytest.raises(SerializationError, match="ndarray"):
        legacy.encode_signal(SignalEmission("count", [np.zeros(2)]))


def test_registry_messages_encode_and_decode():
    message = RegistryMessage(RegistryEvents.REGISTER, {"name": "cam", "addr": "a"})
    frame = legacy.encode_registry(message)
    assert _json(frame) == {
        "event": "REGISTER",
        "payload": {"name": "cam", "addr": "a"},
    }
    assert legacy.decode_registry([frame]) == message
    assert legacy.decode_registry([b'{"event": "ACK"}']).payload == {}
    for frames, text in (
        ([b'{"event": "DANCE", "payload": {}}'], "unknown registry event 'DANCE'"),
        ([b'{"event": "ACK", "payload": []}'], "payload must be an object"),
        ([b"{nope"], "not JSON"),
        ([frame, frame], "one frame"),
    ):
        with pytest.raises(ProtocolError, match=text):
            legacy.decode_registry(frames)
    assert legacy.peek_event(b'{"event": "DANCE"}') == "DANCE"
    assert legacy.peek_event(b'{"event": 5}') is None
    assert legacy.peek_event(b"{nope") is None
