"""Bad input never stops a server: oversized messages."""

from __future__ import annotations

import pytest
from bad_input_helpers import SILENCE_MS, _dealer_exchange, _echo_frames

from framerpc import protocol, transport

LIMIT = 64 * 1024


@pytest.fixture
def small_server(ctx, serve):
    """A camera accepting frames of at most 64 KiB, on loopback TCP."""
    from devices import CameraServer

    options = transport.SocketOptions(max_message_size=LIMIT)
    return serve(CameraServer(ctx, "tcp://127.0.0.1", options=options))


def test_oversized_message_drops_only_its_sender(small_server, raw, connect):
    sock = raw(small_server.url)
    # under the limit: served
    body = _dealer_exchange(sock, _echo_frames(1, b"x" * (LIMIT - 1024)))
    assert body is not None and protocol.decode_reply(body).ok
    # 1 MiB frame: libzmq drops the connection, there is no reply to give
    assert _dealer_exchange(sock, _echo_frames(2, b"x" * (1 << 20)), SILENCE_MS) is None
    # other clients are served meanwhile
    proxy = connect(small_server.url)
    assert proxy.echo("others are served") == "others are served"
    # the same socket reconnects and is served again
    body = _dealer_exchange(sock, _echo_frames(3, "after reconnect"))
    assert body is not None, "the dropped client was not served after reconnecting"
    reply = protocol.decode_reply(body)
    assert (reply.ok, reply.request_id, reply.value) == (True, 3, "after reconnect")
    assert proxy.add(1, 2) == 3


def test_default_limit_serves_a_1_mib_message(tcp_camera, raw):
    """The 64 KiB limit above, not the message, is what drops the sender."""
    sock = raw(tcp_camera.url)
    data = bytes(range(256)) * 4096
    body = _dealer_exchange(sock, _echo_frames(1, data))
    assert body is not None
    reply = protocol.decode_reply(body)
    assert reply.ok and bytes(reply.value) == data
