"""Interoperability with the older JSON protocol, in both directions.

First the sans-I/O codec of :mod:`framerpc.legacy` alone, one case table per
message kind. Then framerpc's server, client and registry against the
independent peers of ``legacy_peers`` (written from legacy-protocol.md with
plain pyzmq and json): every row of the spec's tables, the error rows,
signals both ways, registration both ways and protocol detection.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from conftest import finishes_within, wait_until
from devices import CameraServer, make_array, make_bytes
from legacy_peers import LegacyClient, LegacyRegistry, LegacyServer
from manual_clock import ManualClock

from framerpc import registry
from framerpc.client import NoResult, RPCClient
from framerpc.errors import ProtocolError, RemoteError, SerializationError
from framerpc.property import RPCProperty
from framerpc.protocol import (
    PROTOCOL_VERSION,
    RegistryEvents,
    RegistryMessage,
    Reply,
    Request,
    RPCEvents,
    SignalEmission,
)
from framerpc.registry import (
    AliveCheckState,
    DeviceRegistry,
    list_devices,
    register_device,
    send_alive_check,
    unregister_device,
)
from framerpc.signal import RPCSignal
from framerpc.signal_receiver import RPCSignalReceiver
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


# == older clients -> framerpc server ==========================================


@pytest.fixture
def legacy_client(ctx: zmq.Context) -> Iterator[Callable[[str], LegacyClient]]:
    """Make :class:`LegacyClient` peers; all closed at the end."""
    clients: list[LegacyClient] = []

    def make(url: str) -> LegacyClient:
        clients.append(LegacyClient(ctx, url))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_inventory_row(tcp_camera, legacy_client):
    reply = legacy_client(tcp_camera.url).request({"event": "GET_INVENTORY"})
    assert reply["json_methods"] == tcp_camera._json_methods
    assert reply["json_methods"]["add"] == 500
    assert reply["json_methods"]["arg_types"] is None
    assert reply["buffer_methods"] == {
        "grab": 5000,
        "read_buffer": None,
        "echo_buffer": 10000,
        "bad_buffer": 10000,
    }
    assert sorted(reply["signals"]) == ["frame_ready", "mode_changed", "pair_ready"]
    assert sorted(reply["properties"]) == ["gain", "mode"]
    assert reply["name"] == ""
    assert reply["framerpc"] == PROTOCOL_VERSION  # ignored by older clients


def test_json_call_rows(camera, legacy_client):
    """On every transport, a REQ client's JSON calls reach the ROUTER."""
    client = legacy_client(camera.url)
    call = {"event": "METHOD_CALL", "method": "add"}
    reply = client.request({**call, "params": {"args": [1, 2], "kwargs": {"scale": 3}}})
    assert reply == {"success": True, "result": 9}
    assert client.request({**call, "params": {"args": [4]}}) == {
        "success": True,
        "result": 4,
    }
    echo = {"event": "METHOD_CALL", "method": "echo"}
    value = {"text": "accentué", "list": [1, 2.5, None, True], "nested": {"a": []}}
    assert client.request({**echo, "params": {"args": [value]}}) == {
        "success": True,
        "result": value,
    }


def test_json_call_error_row(tcp_camera, legacy_client):
    client = legacy_client(tcp_camera.url)
    reply = client.request(
        {"event": "METHOD_CALL", "method": "fail", "params": {"args": ["boom"]}}
    )
    assert set(reply) == {"success", "error", "traceback"}
    assert reply["success"] is False and reply["error"] == "ValueError: boom"
    assert "raise ValueError(message)" in reply["traceback"]
    # a call with wrong arguments is an error of the same shape
    reply = client.request({"event": "METHOD_CALL", "method": "add", "params": {}})
    assert reply["success"] is False and reply["error"].startswith("TypeError")


def test_unknown_method_row(tcp_camera, legacy_client):
    reply = legacy_client(tcp_camera.url).request(
        {"event": "METHOD_CALL", "method": "focus", "params": {"args": [1.5]}}
    )
    assert reply == {"success": False, "error": "Method focus not implemented"}


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64", "bool"])
def test_buffer_call_row_with_an_array(tcp_camera, legacy_client, dtype):
    frames = legacy_client(tcp_camera.url).frames(
        {
            "event": "METHOD_CALL",
            "method": "grab",
            "params": {"args": [[30, 40], dtype]},
        }
    )
    assert len(frames) == 2
    assert json.loads(frames[0]) == {"shape": [30, 40], "dtype": dtype}
    assert frames[1] == make_array([30, 40], dtype).tobytes()


def test_buffer_call_row_with_bytes_like_results(tcp_camera, legacy_client):
    client = legacy_client(tcp_camera.url)
    for kind in ("bytes", "bytearray", "memoryview"):
        frames = client.frames(
            {
                "event": "METHOD_CALL",
                "method": "read_buffer",
                "params": {"args": [70_000, kind]},
            }
        )
        assert json.loads(frames[0]) == {"size": 70_000, "kind": kind}
        assert frames[1] == make_bytes(70_000)


def test_buffer_call_error_row(tcp_camera, legacy_client):
    client = legacy_client(tcp_camera.url)
    for kind in ("str", "no-info"):
        frames = client.frames(
            {"event": "METHOD_CALL", "method": "bad_buffer", "params": {"args": [kind]}}
        )
        assert len(frames) == 1
        reply = json.loads(frames[0])
        assert reply["success"] is False and "error" in reply
        assert "buffer method bad_buffer must return" in reply["error"]
        assert "Traceback" in reply["traceback"]


def test_json_results_json_cannot_carry_are_errors_naming_the_type(
    tcp_camera, legacy_client
):
    client = legacy_client(tcp_camera.url)
    for method, args, type_name in (
        ("make_array", [[2], "uint8"], "ndarray"),
        ("unsendable", ["set"], "set"),
        ("echo", [[1, {"k": 2}]], None),  # control: this one travels
    ):
        reply = client.request(
            {"event": "METHOD_CALL", "method": method, "params": {"args": args}}
        )
        if type_name is None:
            assert reply == {"success": True, "result": [1, {"k": 2}]}
        else:
            assert reply["success"] is False
            assert "SerializationError" in reply["error"]
            assert type_name in reply["error"]


def test_property_rows(tcp_camera, legacy_client):
    client = legacy_client(tcp_camera.url)
    get = {"event": "PROPERTY_GET", "property": "gain"}
    assert client.request(get) == {"success": True, "value": 1}
    set_ = {"event": "PROPERTY_SET", "property": "gain", "value": 5}
    assert client.request(set_) == {"success": True}
    assert tcp_camera.gain == 5
    assert client.request(get) == {"success": True, "value": 5}
    # error rows: a setter that raises, an unknown property
    reply = client.request({**set_, "value": -1})
    assert reply["success"] is False
    assert reply["error"] == "ValueError: gain must be >= 0, got -1"
    assert "Traceback" in reply["traceback"]
    for request in (
        {"event": "PROPERTY_GET", "property": "zoom"},
        {"event": "PROPERTY_SET", "property": "zoom", "value": 2},
    ):
        reply = client.request(request)
        assert reply["success"] is False and "zoom" in reply["error"]
        assert "traceback" in reply
    assert tcp_camera.gain == 5


def test_stop_row(ctx, legacy_client):
    server = CameraServer(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        reply = legacy_client(server.url).request({"event": "STOP_SERVER"})
        assert reply == {"success": True}
        thread.join(timeout=5)
        assert not thread.is_alive(), "the server did not stop"
    finally:
        server.stop_server()
        thread.join(timeout=5)


BAD_JSON_REQUESTS = {
    "not json": (b"{garbage", "not JSON"),
    "unknown event": (b'{"event": "DANCE"}', "unknown event 'DANCE'"),
    "no method": (b'{"event": "METHOD_CALL"}', "lacks field 'method'"),
    "no value": (b'{"event": "PROPERTY_SET", "property": "gain"}', "'value'"),
}


@pytest.mark.parametrize("case", list(BAD_JSON_REQUESTS))
def test_malformed_json_requests_get_an_error_and_the_server_goes_on(
    tcp_camera, legacy_client, connect, case
):
    data, text = BAD_JSON_REQUESTS[case]
    client = legacy_client(tcp_camera.url)
    reply = client.request(data)
    assert reply["success"] is False
    assert reply["error"].startswith("ProtocolError") and text in reply["error"]
    assert client.request({"event": "PROPERTY_GET", "property": "gain"})["success"]
    assert connect(tcp_camera.url).echo("still serving") == "still serving"


# -- signals to older clients ----------------------------------------------------


def _legacy_subscribe(client: LegacyClient) -> int:
    reply = client.request({"event": "INIT_SIGNALS_HANDLING"})
    assert set(reply) == {"success", "signal_port"} and reply["success"] is True
    client.subscribe(reply["signal_port"])
    return reply["signal_port"]


def _until_received(client: LegacyClient, emit: Callable[[], object]) -> list:
    """Emit until the older client's subscription is live (it has no
    handshake); return the first batch of messages it received."""
    received: list = []

    def attempt() -> bool:
        emit()
        received.extend(client.emissions(20))
        return bool(received)

    assert wait_until(attempt), "no emission reached the older client"
    return received


def test_signals_init_row_and_json_emissions(tcp_camera, legacy_client):
    client = legacy_client(tcp_camera.url)
    port = _legacy_subscribe(client)
    assert port not in (tcp_camera.port, tcp_camera._signal_port)
    # bound once, reused
    assert client.request({"event": "INIT_SIGNALS_HANDLING"})["signal_port"] == port
    received = _until_received(client, lambda: tcp_camera.frame_ready.emit(7))
    assert received[0] == [
        b'{"event": "EMIT_SIGNAL", "signal": "frame_ready", "args": [7], '
        b'"blocking": false}'
    ]
    tcp_camera.pair_ready.emit((3, "three"))
    received = client.emissions_until(lambda m: b"pair_ready" in m[0])
    (frames,) = [m for m in received if b"pair_ready" in m[0]]
    assert json.loads(frames[0])["args"] == [[3, "three"]]


def test_property_notify_reaches_older_clients(tcp_camera, legacy_client):
    client = legacy_client(tcp_camera.url)
    _legacy_subscribe(client)
    _until_received(client, lambda: tcp_camera.frame_ready.emit(0))
    set_mode = {"event": "PROPERTY_SET", "property": "mode", "value": "hdr"}
    assert client.request(set_mode) == {"success": True}
    tcp_camera.frame_ready.emit(-1)  # sentinel: a second notify would be before it
    received = client.emissions_until(lambda m: b"[-1]" in m[0])
    messages = [json.loads(m[0]) for m in received]
    assert [m["args"] for m in messages if m["signal"] == "mode_changed"] == [["hdr"]]


def test_native_clients_receive_each_emission_once(tcp_camera, connect, legacy_client):
    proxy = connect(tcp_camera.url)
    native: list[int] = []
    proxy.frame_ready.connect(native.append)
    client = legacy_client(tcp_camera.url)
    _legacy_subscribe(client)
    attempts: list[int] = []

    def emit_probe() -> None:
        attempts.append(-1)
        tcp_camera.frame_ready.emit(-1)

    received = _until_received(client, emit_probe)
    for value in range(20):
        tcp_camera.frame_ready.emit(value)
    tcp_camera.frame_ready.emit(-2)  # sentinel: duplicates would come before it
    assert wait_until(lambda: native[-1:] == [-2])
    # Subscribed (with handshake) before the first emission: every one, once.
    assert native == [*attempts, *range(20), -2]
    received += client.emissions_until(lambda m: b"[-2]" in m[0])
    # The older client sees JSON only: no msgpack frame, no handshake.
    assert all(len(m) == 1 and m[0].startswith(b"{") for m in received)
    args = [json.loads(m[0])["args"][0] for m in received]
    assert [a for a in args if a >= 0] == list(range(20))


def test_no_json_is_encoded_before_an_older_client_asks(
    tcp_camera, connect, legacy_client, monkeypatch
):
    encoded: list[SignalEmission] = []
    real = legacy.encode_signal

    def counting(emission: SignalEmission) -> bytes:
        encoded.append(emission)
        return real(emission)

    monkeypatch.setattr(legacy, "encode_signal", counting)
    proxy = connect(tcp_camera.url)
    got: list[int] = []
    proxy.frame_ready.connect(got.append)
    tcp_camera.frame_ready.emit(1)
    assert wait_until(lambda: got == [1])
    assert encoded == [] and tcp_camera._legacy_signal_socket is None
    client = legacy_client(tcp_camera.url)
    _legacy_subscribe(client)
    tcp_camera.frame_ready.emit(2)
    assert encoded == [SignalEmission("frame_ready", [2])]


def test_argument_json_cannot_carry_skips_only_older_subscribers(
    tcp_camera, connect, legacy_client, caplog
):
    proxy = connect(tcp_camera.url)
    native: list = []
    proxy.frame_ready.connect(native.append)
    client = legacy_client(tcp_camera.url)
    _legacy_subscribe(client)
    _until_received(client, lambda: tcp_camera.frame_ready.emit(0))
    with caplog.at_level(logging.WARNING, logger="framerpc.server"):
        tcp_camera.frame_ready.emit(np.arange(3))
    tcp_camera.frame_ready.emit(5)
    assert wait_until(lambda: any(type(v) is int and v == 5 for v in native))
    assert any(isinstance(v, np.ndarray) for v in native)
    received = client.emissions_until(lambda m: b'"args": [5]' in m[0])
    args = [json.loads(m[0])["args"] for m in received]
    assert args[-1] == [5] and all(a == [0] or a == [5] for a in args)
    assert "not sent to JSON subscribers" in caplog.text


def test_signals_of_a_server_without_tcp_port_are_refused(
    ctx, serve, tmp_path, legacy_client
):
    server = serve(CameraServer(ctx, f"ipc://{tmp_path}/cam.sock"))
    client = legacy_client(server.url)
    reply = client.request({"event": "INIT_SIGNALS_HANDLING"})
    assert reply["success"] is False and "no TCP port" in reply["error"]
    assert client.request({"event": "PROPERTY_GET", "property": "gain"})["success"]


# == framerpc client -> older server ===========================================


class LegacyCamera(ABC):
    """The interface of ``legacy_peers.LegacyServer``, plus ``focus``,
    which it lacks."""

    count = RPCSignal(int)
    mode_changed = RPCSignal(str)
    gain = RPCProperty(doc="Gain.")
    mode = RPCProperty(doc="Mode; setting it emits mode_changed.")

    @abstractmethod
    def add(self, a: int, b: int = 0, scale: int = 1) -> int: ...

    @abstractmethod
    def echo(self, value: Any) -> Any: ...

    @abstractmethod
    def fail(self, message: str) -> None: ...

    @abstractmethod
    def sleep(self, seconds: float) -> float: ...

    @abstractmethod
    def emit(self, name: str, *args: Any) -> None: ...

    @abstractmethod
    def grab(self, size: int) -> tuple: ...

    @abstractmethod
    def grab_fail(self) -> tuple: ...

    @abstractmethod
    def focus(self, distance: float) -> bool: ...


@RPCClient.register_interface(LegacyCamera)
class LegacyCameraProxy(LegacyCamera, RPCClient):
    """Proxy of the older server."""


@pytest.fixture
def legacy_server(ctx: zmq.Context) -> Iterator[LegacyServer]:
    server = LegacyServer(ctx)
    server.start()
    yield server
    server.close()
    assert server.errors == []


@pytest.fixture(params=["auto", "legacy"])
def old_proxy(request, legacy_server, connect) -> LegacyCameraProxy:
    """A proxy of the older server, detected or told."""
    if request.param == "auto":
        return connect(legacy_server.url, LegacyCameraProxy)
    return connect(legacy_server.url, LegacyCameraProxy, protocol="legacy")


def test_auto_detects_an_older_server(legacy_server, connect):
    proxy = connect(legacy_server.url, LegacyCameraProxy)
    assert proxy._protocol == "legacy"
    assert proxy.name == "legacy-cam"
    assert proxy._json_methods == {
        "add": 500,
        "echo": None,
        "fail": 10000,
        "sleep": 100,
        "emit": 10000,
    }
    assert proxy._buffer_methods == {"grab": 5000, "grab_fail": 10000}
    assert proxy._properties == ["gain", "mode"]
    assert sorted(proxy._signals) == ["count", "mode_changed"]
    # detection sent JSON only (the peer would have failed on msgpack)
    assert legacy_server.events()[:2] == ["GET_INVENTORY", "INIT_SIGNALS_HANDLING"]


def test_auto_detects_a_framerpc_server(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    assert proxy._protocol == "native"
    got: list[int] = []
    proxy.frame_ready.connect(got.append)
    tcp_camera.frame_ready.emit(3)  # native handshake done: no emission lost
    assert wait_until(lambda: got == [3])
    array = proxy.make_array([4, 4], "int32")  # a native-only value
    assert isinstance(array, np.ndarray) and array.dtype == np.int32


def test_a_marker_of_another_version_means_json(tcp_camera, connect, monkeypatch):
    """A framerpc server of another native version is spoken to in JSON,
    which both understand."""
    real = legacy.encode_inventory

    def newer(inventory: dict) -> list:
        message = _json(real(inventory)[0])
        message["framerpc"] = PROTOCOL_VERSION + 1
        return [json.dumps(message).encode()]

    monkeypatch.setattr(legacy, "encode_inventory", newer)
    proxy = connect(tcp_camera.url)
    assert proxy._protocol == "legacy"
    assert proxy.add(1, 2) == 3


def test_native_protocol_can_be_forced(tcp_camera, connect, monkeypatch):
    sent: list = []
    real = legacy.encode_request
    monkeypatch.setattr(legacy, "encode_request", lambda r: sent.append(r) or real(r))
    proxy = connect(tcp_camera.url, protocol="native")
    assert proxy._protocol == "native" and proxy.add(2, 2) == 4
    assert sent == []


def test_an_unknown_protocol_is_refused(ctx, tcp_camera):
    with pytest.raises(ValueError, match="protocol must be one of"):
        RPCClient(ctx, tcp_camera.url, protocol="json")  # type: ignore[arg-type]


def test_json_calls_to_an_older_server(old_proxy):
    assert old_proxy._protocol == "legacy"
    assert old_proxy.add(1, 2, scale=3) == 9
    assert old_proxy.execute("add", {"args": [2]}) == (True, 2)
    assert old_proxy.echo((1, "a")) == [1, "a"]  # JSON turns tuples into lists
    value = {"k": [1.5, None, True, "é"]}
    assert old_proxy.echo(value) == value


def test_errors_of_an_older_server_are_noresult(old_proxy, legacy_server):
    result = old_proxy.fail("boom")
    assert isinstance(result, NoResult) and not result
    assert result.error == "boom" and "ValueError" in result.traceback
    missing = old_proxy.focus(1.5)
    assert isinstance(missing, NoResult)
    assert (missing.error, missing.traceback) == ("Method focus not implemented", "")
    assert old_proxy.execute("nope", {}) == (
        False,
        ("Method nope not implemented", ""),
    )
    assert old_proxy.add(1) == 1


def test_arguments_json_cannot_carry_raise_before_sending(old_proxy, legacy_server):
    before = len(legacy_server.requests)
    with pytest.raises(TypeError, match="bytes"):
        old_proxy.echo(b"raw")
    with pytest.raises(TypeError, match="ndarray"):
        old_proxy.echo(np.zeros(3))
    assert len(legacy_server.requests) == before
    assert old_proxy.echo("still usable") == "still usable"


def test_buffer_calls_to_an_older_server(old_proxy):
    data, info = old_proxy.grab(1000)
    assert isinstance(data, memoryview) and data.readonly
    assert data == (bytes(range(256)) * 4)[:1000]
    assert info == {"size": 1000}
    empty, info = old_proxy.grab(0)
    assert empty.nbytes == 0 and info == {"size": 0}
    failed = old_proxy.grab_fail()
    assert isinstance(failed, NoResult) and failed.error == "no frame"
    assert "RuntimeError" in failed.traceback


def test_timeout_then_the_late_reply_is_never_returned(old_proxy):
    """``sleep`` has a 100 ms timeout; JSON carries no request id, so the
    client must make sure the late reply cannot answer the next call."""
    with pytest.raises(TimeoutError):
        old_proxy.sleep(0.4)
    assert old_proxy.echo("next") == "next"
    with pytest.raises(TimeoutError):
        old_proxy.execute("sleep", {"args": [0.3]})
    assert old_proxy.add(20, 22) == 42


def test_properties_of_an_older_server(old_proxy, legacy_server):
    assert (old_proxy.gain, old_proxy.mode) == (1, "normal")
    old_proxy.gain = 5
    assert legacy_server.values["gain"] == 5 and old_proxy.gain == 5
    with pytest.raises(RemoteError) as caught:
        old_proxy.gain = -1
    assert "gain must be >= 0" in caught.value.error
    assert "ValueError" in caught.value.traceback
    missing = old_proxy._get_property("zoom")
    assert isinstance(missing, NoResult) and "zoom" in missing.error
    assert old_proxy.gain == 5


def test_signals_of_an_older_server(old_proxy, legacy_server):
    counts: list[int] = []
    modes: list[str] = []
    old_proxy.count.connect(counts.append)
    old_proxy.mode_changed.connect(modes.append)
    assert wait_until(lambda: old_proxy.emit("count", 7) or counts[-1:] == [7])
    old_proxy.mode = "hdr"
    assert wait_until(lambda: modes == ["hdr"])
    assert set(counts) == {7}


def test_stop_an_older_server(old_proxy, legacy_server):
    assert old_proxy.stop_server() is True
    assert legacy_server.stopped.is_set()
    legacy_server.join(timeout=5)
    assert not legacy_server.is_alive()


def test_stop_acknowledgement_survives_the_server_closing_at_once(ctx, connect):
    """The older server closes right after its STOP_SERVER reply; a DEALER
    with IMMEDIATE would often drop that unread reply (about 1 run in 10)."""
    for _ in range(20):
        server = LegacyServer(ctx)
        server.start()
        try:
            assert connect(server.url, LegacyCameraProxy).stop_server() is True
        finally:
            server.close()
        assert server.errors == []


def test_legacy_mode_against_a_framerpc_server(tcp_camera, connect):
    """protocol="legacy" also works with a framerpc server (it speaks JSON)."""
    proxy = connect(tcp_camera.url, protocol="legacy")
    assert proxy._protocol == "legacy"
    assert proxy.add(1, 2, scale=3) == 9
    assert proxy.set_exposure(100) is True and tcp_camera.exposure == 100
    buffer, info = proxy.grab([2, 3], "uint16")
    assert isinstance(buffer, memoryview) and buffer.readonly
    assert buffer == make_array([2, 3], "uint16").tobytes()
    assert info == {"shape": [2, 3], "dtype": "uint16"}
    failed = proxy.fail("boom")
    assert isinstance(failed, NoResult) and failed.error == "ValueError: boom"
    assert "SerializationError" in proxy.make_array([2], "uint8").error
    proxy.gain = 4
    assert proxy.gain == 4
    with pytest.raises(RemoteError):
        proxy.gain = -4
    got: list[int] = []
    proxy.frame_ready.connect(got.append)
    assert wait_until(lambda: tcp_camera.frame_ready.emit(9) or got[-1:] == [9])
    assert proxy.stop_server() is True


def test_legacy_mode_without_tcp_has_no_signals(ctx, serve, tmp_path, connect, caplog):
    server = serve(CameraServer(ctx, f"ipc://{tmp_path}/cam.sock"))
    with caplog.at_level(logging.WARNING, logger="framerpc.client"):
        proxy = connect(server.url, protocol="legacy")
    assert "no signals" in caplog.text and proxy._signal_receiver is None
    assert proxy.echo("calls work") == "calls work"


# -- the receiver's connection wait (used for older servers) --------------------------


def test_wait_connected(ctx):
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        receiver = RPCSignalReceiver(
            ctx, f"tcp://127.0.0.1:{port}", {}, confirm_connection=True
        )
        try:
            assert receiver.wait_connected(5000) is True
            with pytest.raises(RuntimeError):
                receiver.wait_connected(10)  # only once
        finally:
            receiver.stop()
        plain = RPCSignalReceiver(ctx, f"tcp://127.0.0.1:{port}", {})
        with pytest.raises(RuntimeError, match="confirm_connection"):
            plain.wait_connected(10)
        plain.stop()
    finally:
        pub.close()


def test_wait_connected_times_out_without_publisher(ctx):
    # A port held by a listener that never speaks ZeroMQ: the handshake
    # cannot complete. (A port closed again could be taken meanwhile by a
    # publisher of another process, and the handshake would succeed.)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        receiver = RPCSignalReceiver(
            ctx, f"tcp://127.0.0.1:{port}", {}, confirm_connection=True
        )
        try:
            # a generous ceiling: it only catches a wait that ignores its timeout
            assert finishes_within(20, lambda: receiver.wait_connected(200)) is False
        finally:
            receiver.start()  # a started receiver closes everything when stopped
            receiver.stop()
            receiver.join(timeout=5)
    assert not receiver.is_alive()


# == registry, both ways =========================================================


@pytest.fixture
def reg_clock() -> ManualClock:
    """The clock of ``reg`` and ``legacy_registry``: their deadlines pass
    only when a test moves it, never because the machine is slow."""
    return ManualClock()


@pytest.fixture
def reg(ctx: zmq.Context, reg_clock: ManualClock) -> Iterator[DeviceRegistry]:
    """A running framerpc DeviceRegistry on loopback TCP (0.3 s default),
    on ``reg_clock``."""
    registry_ = DeviceRegistry(
        ctx, "127.0.0.1", None, default_alive_timeout=0.3, clock=reg_clock
    )
    registry_.start()
    yield registry_
    registry_.stop()
    registry_.join(timeout=5)
    assert not registry_.is_alive()


def _register(client: LegacyClient, **payload: Any) -> dict:
    payload.setdefault("device_type", "camera")
    payload.setdefault("addr", "tcp://10.0.0.1:5000")
    return client.request({"event": "REGISTER", "payload": payload})


def test_register_row(reg, legacy_client):
    reply = _register(legacy_client(reg.url), name="cam")
    assert set(reply) == {"event", "payload"} and reply["event"] == "REGISTER_ACK"
    assert set(reply["payload"]) == {"name", "uuid"}
    assert reply["payload"]["name"] == "cam"
    assert reg.get_devices() == {"cam": ("camera", "tcp://10.0.0.1:5000")}


def test_register_row_naming_rules(reg, legacy_client):
    client = legacy_client(reg.url)

    def name(**payload: Any) -> str:
        return _register(client, **payload)["payload"]["name"]

    assert name(name="cam", addr="tcp://h:1") == "cam"
    assert name(name="cam", addr="tcp://h:2") == "cam-1"  # overwrite defaults false
    assert name(name="cam", addr="tcp://h:3", overwrite=False) == "cam-2"
    assert name(name="", addr="tcp://h:4") == "camera-0"
    assert name(addr="tcp://h:5") == "camera-1"  # no name at all: same as empty
    # the same address registering again replaces its old entry
    assert name(name="cam-1", addr="tcp://h:2") == "cam-1"
    assert len(reg.get_devices()) == 5
    # overwrite true: the holder of the name is removed first
    assert name(name="cam", addr="tcp://h:9", overwrite=True) == "cam"
    devices = reg.get_devices()
    assert devices["cam"] == ("camera", "tcp://h:9")
    assert "tcp://h:1" not in {address for _, address in devices.values()}


def test_unregister_row(reg, legacy_client):
    client = legacy_client(reg.url)
    device_uuid = _register(client, name="cam")["payload"]["uuid"]
    unregister = {"event": "UNREGISTER", "payload": {"uuid": device_uuid}}
    assert client.request(unregister) == {
        "event": "ACK",
        "payload": {"req_event": "UNREGISTER", "success": True},
    }
    assert reg.get_devices() == {}
    assert client.request(unregister)["payload"] == {
        "req_event": "UNREGISTER",
        "success": False,
    }


def _listed_after_sentinel(client: LegacyClient, reg: DeviceRegistry) -> set[str]:
    """Names listed once ``reg`` answered a request: it prunes up to its
    clock's time before each one (a check of an unknown uuid, harmless)."""
    unknown = {"event": "CHECK_ALIVE", "payload": {"uuid": "no-such-device"}}
    assert client.request(unknown)["payload"]["success"] is False
    return set(reg.get_devices())


def test_check_alive_row_moves_the_deadline(reg, reg_clock, legacy_client):
    client = legacy_client(reg.url)
    device_uuid = _register(client, name="cam")["payload"]["uuid"]
    check = {"event": "CHECK_ALIVE", "payload": {"uuid": device_uuid}}
    for _ in range(5):  # 1 s in all, three times the registry's 0.3 s default
        reg_clock.advance(0.2)
        # the registry prunes before answering: success means still listed
        assert client.request(check) == {
            "event": "ACK",
            "payload": {"req_event": "CHECK_ALIVE", "success": True},
        }
    assert "cam" in _listed_after_sentinel(client, reg)
    longer = {
        "event": "CHECK_ALIVE",
        "payload": {"uuid": device_uuid, "alive_timeout": 2},
    }
    assert client.request(longer)["payload"]["success"] is True
    reg_clock.advance(1.99)  # far past the 0.3 s default, not past 2 s
    assert "cam" in _listed_after_sentinel(client, reg)
    shorter = {
        "event": "CHECK_ALIVE",
        "payload": {"uuid": device_uuid, "alive_timeout": 0.1},
    }
    assert client.request(shorter)["payload"]["success"] is True
    reg_clock.advance(0.09)
    assert "cam" in _listed_after_sentinel(client, reg)
    reg_clock.advance(0.02)  # past the 0.1 s deadline
    assert wait_until(lambda: reg.get_devices() == {})
    assert client.request(check)["payload"] == {
        "req_event": "CHECK_ALIVE",
        "success": False,
    }


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (b'{"event": "DANCE", "payload": {}}', "DANCE"),
        (b'{"event": "REGISTER_ACK", "payload": {"name": "x"}}', "REGISTER_ACK"),
        (b'{"event": "DANCE"}', "DANCE"),
        (b'{"event": 5, "payload": {}}', None),
        (b"{not json", None),
    ],
    ids=["unknown", "a reply kind", "no payload", "event not str", "not json"],
)
def test_unsupported_row(reg, legacy_client, data, event):
    client = legacy_client(reg.url)
    assert client.request(data) == {
        "event": "UNSUPPORTED",
        "payload": {"req_event": event},
    }
    assert _register(client, name="after")["event"] == "REGISTER_ACK"


def test_malformed_payload_is_unsupported_with_a_reason(reg, legacy_client):
    reply = legacy_client(reg.url).request(
        {"event": "REGISTER", "payload": {"name": "no type"}}
    )
    assert reply["event"] == "UNSUPPORTED"
    assert reply["payload"]["req_event"] == "REGISTER"
    assert "device_type" in reply["payload"]["error"]


def test_older_devices_and_list_devices_see_one_directory(ctx, reg, legacy_client):
    _register(legacy_client(reg.url), name="old-cam", addr="tcp://h:1")
    register_device(ctx, reg.url, "camera", "tcp://h:2", "new-cam")
    expected = {"old-cam": ("camera", "tcp://h:1"), "new-cam": ("camera", "tcp://h:2")}
    assert list_devices(ctx, reg.url) == expected == reg.get_devices()


@pytest.fixture
def legacy_registry(
    ctx: zmq.Context, reg_clock: ManualClock
) -> Iterator[LegacyRegistry]:
    """An older registry on ``reg_clock`` (20 s default deadline)."""
    peer = LegacyRegistry(ctx, clock=reg_clock)
    peer.start()
    yield peer
    peer.close()
    assert peer.errors == []


def test_helpers_with_an_older_registry(ctx, legacy_registry):
    url = legacy_registry.url
    name, device_uuid = register_device(ctx, url, "camera", "tcp://h:1", "cam")
    assert name == "cam" and legacy_registry.devices() == {
        "cam": ("camera", "tcp://h:1")
    }
    name_2, _ = register_device(ctx, url, "camera", "tcp://h:2", "cam", overwrite=False)
    assert name_2 == "cam-1"
    assert send_alive_check(ctx, url, device_uuid) is AliveCheckState.ok
    assert send_alive_check(ctx, url, "unknown") is AliveCheckState.unknown
    assert unregister_device(ctx, url, device_uuid) is True
    assert unregister_device(ctx, url, device_uuid) is False
    assert legacy_registry.devices() == {"cam-1": ("camera", "tcp://h:2")}
    # framerpc's own LIST_DEVICES: refused cleanly, the older registry lives on
    with pytest.raises(RuntimeError, match="refused LIST_DEVICES"):
        list_devices(ctx, url)
    assert send_alive_check(ctx, url, "unknown") is AliveCheckState.unknown
    assert legacy_registry.events() == [
        "REGISTER",
        "REGISTER",
        "CHECK_ALIVE",
        "CHECK_ALIVE",
        "UNREGISTER",
        "UNREGISTER",
        "LIST_DEVICES",
        "CHECK_ALIVE",
    ]


def test_server_registers_checks_in_and_unregisters_with_an_older_registry(
    ctx, serve, legacy_registry
):
    server = CameraServer(ctx, "tcp://127.0.0.1", alive_timeout=0.3)
    assert server.register_to_registry("camera", "cam", legacy_registry.url) == "cam"
    assert legacy_registry.devices() == {"cam": ("camera", server.url)}
    serve(server)
    assert wait_until(lambda: legacy_registry.events().count("CHECK_ALIVE") >= 3)
    checks = [
        r["payload"] for r in legacy_registry.requests if r["event"] == "CHECK_ALIVE"
    ]
    assert checks[0] == {"uuid": server.uuid, "alive_timeout": 0.3}
    server.stop_server()
    assert wait_until(lambda: legacy_registry.devices() == {})
    assert legacy_registry.events()[-1] == "UNREGISTER"


def test_server_name_clash_with_an_older_registry(ctx, legacy_registry):
    register_device(ctx, legacy_registry.url, "camera", "tcp://h:1", "cam")
    server = CameraServer(ctx, "tcp://127.0.0.1")
    try:
        name = server.register_to_registry(
            "camera", "cam", legacy_registry.url, overwrite=False
        )
        assert name == "cam-1" == server.name
    finally:
        server.stop_server()
    assert legacy_registry.devices() == {"cam": ("camera", "tcp://h:1")}


def test_server_registers_again_when_an_older_registry_forgets_it(
    ctx, serve, legacy_registry
):
    server = CameraServer(ctx, "tcp://127.0.0.1", alive_timeout=0.3)
    server.register_to_registry("camera", "cam", legacy_registry.url)
    old_uuid = server.uuid
    serve(server)
    legacy_registry.forget()  # as after a restart
    assert wait_until(
        lambda: legacy_registry.devices() == {"cam": ("camera", server.url)}
    )
    assert wait_until(lambda: server.uuid != old_uuid)
    registers = [r for r in legacy_registry.requests if r["event"] == "REGISTER"]
    assert registers[-1]["payload"]["overwrite"] is False
    assert registers[-1]["payload"]["name"] == "cam"


def test_first_check_in_beats_an_older_registrys_default_deadline(
    ctx, serve, monkeypatch, legacy_client
):
    """An older registry may ignore alive_timeout in REGISTER and keep its
    default deadline (20 s; 300 s here) until the first check-in, while a
    server's own period can be longer (60 / 3 s by default; 1000 s here).

    The registry and the server's link share a clock moved by hand. The
    times are far beyond the wait's real ceiling: only that clock, passed
    to register_to_registry, can make the check-in due; and the server has
    all the real time it needs to check in before the registry's 300 s pass.
    """
    monkeypatch.setattr(registry, "DEFAULT_ALIVE_TIMEOUT", 300.0)
    clock = ManualClock()
    peer = LegacyRegistry(ctx, default_alive_timeout=300.0, clock=clock)
    peer.start()
    try:
        server = CameraServer(ctx, "tcp://127.0.0.1", alive_timeout=3000)
        server.register_to_registry("camera", "cam", peer.url, clock=clock)
        serve(server)
        # Due after 300 / 3 s; the server's own period (1000 s) is far from due.
        clock.advance(150.0)
        assert wait_until(lambda: "CHECK_ALIVE" in peer.events()), "no check-in"
        clock.advance(200.0)  # past the default deadline, not the 3000 s one
        # the older registry prunes before answering: a sentinel request
        unknown = {"event": "CHECK_ALIVE", "payload": {"uuid": "no-such-device"}}
        assert legacy_client(peer.url).request(unknown)["payload"]["success"] is False
        assert peer.devices() == {"cam": ("camera", server.url)}
        server.stop_server()
    finally:
        peer.close()
    assert peer.errors == []
