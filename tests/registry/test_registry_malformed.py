"""Tests of framerpc.registry: malformed requests get an answer or are dropped.

No test depends on a wall-clock deadline being met: registries and links
run on a :class:`ManualClock` moved by hand, waits poll a condition with
generous bounds, and "nothing arrived" is shown with a sentinel request.
Helpers shared by tests/registry/test_registry*.py are in registry_helpers.py.
"""

from __future__ import annotations

import msgpack
import pytest
import zmq
from registry_helpers import WAIT, inproc_url, raw_exchange

from framerpc import framing, protocol
from framerpc.protocol import RegistryEvents, RegistryMessage
from framerpc.registry import (
    DeviceRegistry,
    list_devices,
)

# -- malformed input ----------------------------------------------------------


def _header(**fields) -> bytes:
    return framing.encode({"v": protocol.PROTOCOL_VERSION, **fields})[0]


@pytest.mark.parametrize(
    ("body", "req_event", "request_id", "error_part"),
    [
        ([b"\xc1\xc1garbage"], None, 0, "msgpack"),
        ([msgpack.packb([1, 2, 3])], None, 0, "map"),
        ([_header(e="FOO", i=7, pl={})], "FOO", 7, "FOO"),
        ([_header(e="ACK", i=8, pl={})], "ACK", 8, "ACK"),
        ([_header(e="REGISTER", i=9, pl=[])], "REGISTER", 9, "payload"),
        (
            [
                _header(
                    e="REGISTER", i=10, pl={"device_type": "c", "addr": "a", "name": 3}
                )
            ],
            "REGISTER",
            10,
            "name",
        ),
        (
            [_header(e="REGISTER", i=11, pl={"addr": "a"})],
            "REGISTER",
            11,
            "device_type",
        ),
        (
            [
                _header(
                    e="REGISTER",
                    i=12,
                    pl={"device_type": "c", "addr": "a", "alive_timeout": "x"},
                )
            ],
            "REGISTER",
            12,
            "alive_timeout",
        ),
        ([_header(e="UNREGISTER", i=13, pl={"uuid": 5})], "UNREGISTER", 13, "uuid"),
        (
            [_header(e="CHECK_ALIVE", i=14, pl={"uuid": "u", "alive_timeout": -1})],
            "CHECK_ALIVE",
            14,
            "alive_timeout",
        ),
        ([], None, 0, "empty"),
    ],
)
def test_malformed_message_gets_unsupported(
    ctx, reg, body, req_event, request_id, error_part
):
    reply = raw_exchange(ctx, reg.url, [b"", *body])
    assert reply is not None, "no reply to a malformed message"
    assert reply.event is RegistryEvents.UNSUPPORTED
    assert reply.request_id == request_id
    assert reply.payload["req_event"] == req_event
    assert error_part in reply.payload["error"]
    # The registry still serves well-formed requests, and changed nothing.
    assert list_devices(ctx, reg.url) == {}
    assert reg.is_alive()


def test_message_without_envelope_is_dropped(ctx, reg):
    # The sentinel, sent after on the same socket, is answered first: the
    # message without envelope got no reply.
    dropped = RegistryMessage(RegistryEvents.LIST_DEVICES, {}, 1)
    sentinel = RegistryMessage(RegistryEvents.LIST_DEVICES, {}, 2)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(reg.url)
        sock.send_multipart(protocol.encode_registry(dropped))
        sock.send_multipart([b"", *protocol.encode_registry(sentinel)])
        assert sock.poll(int(WAIT * 1000))
        reply = protocol.decode_registry(sock.recv_multipart()[1:])
    finally:
        sock.close()
    assert reply.request_id == 2
    assert list_devices(ctx, reg.url) == {}


def test_reply_echoes_request_id(ctx, reg):
    message = RegistryMessage(RegistryEvents.CHECK_ALIVE, {"uuid": "nope"}, 123456)
    reply = raw_exchange(ctx, reg.url, [b"", *protocol.encode_registry(message)])
    assert reply.request_id == 123456
    assert reply.payload == {"req_event": "CHECK_ALIVE", "success": False}


def test_handle_request_without_sockets(ctx):
    # The request logic is reusable by another front-end (e.g. JSON).
    reg = DeviceRegistry(ctx, inproc_url())
    try:
        event, payload = reg._handle_request(
            "REGISTER", {"device_type": "cam", "addr": "a", "name": ""}
        )
        assert event is RegistryEvents.REGISTER_ACK
        assert payload["name"] == "cam-0"
        event, payload = reg._handle_request("UNREGISTER", {"uuid": payload["uuid"]})
        assert (event, payload["success"]) == (RegistryEvents.ACK, True)
        event, payload = reg._handle_request("NOPE", {})
        assert (event, payload["req_event"]) == (RegistryEvents.UNSUPPORTED, "NOPE")
    finally:
        reg.stop()
