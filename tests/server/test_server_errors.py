"""Tests for framerpc.server: error replies, and malformed requests that the
server answers or drops while it serves on.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from framerpc.client import NoResult
from framerpc.wire import messages as protocol

# -- error replies and robustness -------------------------------------------


def test_handler_exception_becomes_an_error_reply(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    ok, (error, traceback) = proxy.execute("fail", {"args": ["boom"]})
    assert ok is False
    assert error == "ValueError: boom"
    assert "in fail" in traceback and "raise ValueError(message)" in traceback
    assert proxy.add(2, 3) == 5  # still serving


@pytest.mark.parametrize("kind", ["str", "triple", "no-info", "list"])
def test_buffer_method_with_a_wrong_result_returns_noresult(tcp_camera, connect, kind):
    proxy = connect(tcp_camera.url)
    result = proxy.bad_buffer(kind)
    assert isinstance(result, NoResult)
    assert "TypeError" in result.error
    assert "buffer method bad_buffer must return" in result.error
    assert proxy.echo("still serving") == "still serving"


@pytest.mark.parametrize(("kind", "type_name"), [("set", "set"), ("object", "object")])
def test_json_method_with_an_unsendable_result_returns_noresult(
    tcp_camera, connect, kind, type_name
):
    proxy = connect(tcp_camera.url)
    result = proxy.unsendable(kind)
    assert isinstance(result, NoResult)
    assert "SerializationError" in result.error and type_name in result.error
    assert proxy.echo("still serving") == "still serving"


def test_datetime_array_result_travels(tcp_camera, connect):
    """Regression: a datetime64 array passed the framing layer but pyzmq
    refused its frame (no buffer interface), which killed serve_forever.
    Such arrays now travel as their raw bytes with their dtype."""
    proxy = connect(tcp_camera.url)
    frame, info = proxy.bad_buffer("datetime")
    assert frame.dtype == np.dtype("datetime64[s]") and frame.shape == (1024,)
    assert info == {}


def test_reply_frame_pyzmq_refuses_becomes_an_error(tcp_camera, connect, monkeypatch):
    """Any frame pyzmq refuses to send gives an error reply, not a dead server
    (the general path; test_zmqio_parity checks the Responder's)."""
    encode_result = protocol.encode_result

    def poisoned(request_id, value, info=None, buffer_reply=False):
        frames = encode_result(request_id, value, info, buffer_reply)
        return [*frames[:-1], object()] if value == "poison" else frames

    proxy = connect(tcp_camera.url)
    proxy.mode = "poison"
    monkeypatch.setattr(protocol, "encode_result", poisoned)
    result = proxy.mode  # a property: the general path, which encodes here
    assert isinstance(result, NoResult)
    assert "TypeError" in result.error and "cannot be sent" in result.error
    assert proxy.echo("still serving") == "still serving"


def _header(**fields) -> bytes:
    return msgpack.packb(fields)


_BAD_REQUESTS = {
    "garbage bytes": ([b"\xc1 garbage"], -1, "not valid msgpack"),
    "msgpack list": ([msgpack.packb([1, 2, 3])], -1, "header must be a map"),
    "wrong version": ([_header(v=99, e="GET_INVENTORY", i=7)], 7, "version 99"),
    "unknown event": ([_header(v=1, e="DANCE", i=8)], 8, "unknown event"),
    "missing fields": ([_header(v=1, e="METHOD_CALL", i=9, m="echo")], 9, "lacks"),
    "wrong field type": (
        [_header(v=1, e="METHOD_CALL", i=10, m="echo", a="x", k={})],
        10,
        "must be list",
    ),
    "non-int id": ([_header(v=1, e="GET_INVENTORY", i="x")], -1, "request id"),
    "dangling frame": (
        [
            _header(
                v=1,
                e="PROPERTY_SET",
                i=11,
                p="gain",
                x=msgpack.ExtType(1, msgpack.packb(3)),
            )
        ],
        11,
        "refers to frame 3",
    ),
    "unreferenced frame": (
        [_header(v=1, e="GET_INVENTORY", i=12), b"extra"],
        12,
        "buffer frames",
    ),
}


@pytest.mark.parametrize("case", list(_BAD_REQUESTS))
def test_malformed_request_gets_an_error_reply(ctx, tcp_camera, connect, case):
    frames, request_id, message = _BAD_REQUESTS[case]
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(tcp_camera.url)
        dealer.send_multipart([b"", *frames])
        assert dealer.poll(5000), "no reply to a malformed request"
        delimiter, *body = dealer.recv_multipart()
    finally:
        dealer.close()
    assert delimiter == b""
    reply = protocol.decode_reply(body)
    assert (reply.ok, reply.request_id) == (False, request_id)
    assert "ProtocolError" in reply.error and message in reply.error
    assert connect(tcp_camera.url).echo("still serving") == "still serving"


def test_message_without_envelope_or_body_is_dropped(ctx, tcp_camera):
    inventory = protocol.Request(protocol.RPCEvents.GET_INVENTORY, 1)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(tcp_camera.url)
        dealer.send_multipart([b"no delimiter"])
        dealer.send_multipart([b""])  # delimiter, then nothing
        dealer.send_multipart([b"", *protocol.encode_request(inventory)])
        assert dealer.poll(5000), "the server stopped answering"
        delimiter, *body = dealer.recv_multipart()
    finally:
        dealer.close()
    reply = protocol.decode_reply(body)
    assert (delimiter, reply.request_id, reply.ok) == (b"", 1, True)  # first reply
