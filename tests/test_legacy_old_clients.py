"""Interoperability with the older JSON protocol: older clients, framerpc server.

Against the independent peers of ``legacy_peers`` (written from
legacy-protocol.md with plain pyzmq and json); the other directions are in
the other tests/test_legacy_*.py files.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import numpy as np
import pytest
from conftest import wait_until
from devices import CameraServer, make_array, make_bytes
from legacy_peers import LegacyClient

from framerpc.protocol import (
    PROTOCOL_VERSION,
    SignalEmission,
)
from framerpc.wire import json_codec as legacy

# == older clients -> framerpc server ==========================================


def test_inventory_row(tcp_camera, legacy_client):
    reply = legacy_client(tcp_camera.url).request({"event": "GET_INVENTORY"})
    assert reply["json_methods"] == tcp_camera._json_methods
    assert reply["json_methods"]["add"] == 500
    assert reply["json_methods"]["arg_types"] is None
    assert reply["buffer_methods"] == {
        "grab": 30000,
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
    # the subscriber's private prefix is JSON whitespace: json.loads skips it
    (frame,) = received[0]
    assert frame.lstrip(b" \t\n\r") == (
        b'{"event": "EMIT_SIGNAL", "signal": "frame_ready", "args": [7], '
        b'"blocking": false}'
    )
    assert len(frame) - len(frame.lstrip(b" \t\n\r")) == 12
    assert json.loads(frame)["args"] == [7]
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
    assert all(len(m) == 1 and m[0].lstrip(b" \t\n\r")[:1] == b"{" for m in received)
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
    # encoded once the server has read the older client's subscription
    assert wait_until(lambda: tcp_camera.frame_ready.emit(2) or encoded)
    assert all(e == SignalEmission("frame_ready", [2]) for e in encoded)


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
