"""Socket helpers: URL parsing, binding on free ports, tuned options."""

from __future__ import annotations

import pytest
import zmq

from framerpc import framing, transport


@pytest.mark.parametrize(
    "url, expected",
    [
        ("tcp://127.0.0.1:5000", ("tcp", "127.0.0.1", 5000)),
        ("tcp://127.0.0.1", ("tcp", "127.0.0.1", None)),
        ("tcp://*:*", ("tcp", "*", None)),
        ("ipc:///tmp/cam.sock", ("ipc", "/tmp/cam.sock", None)),
        ("inproc://cam", ("inproc", "cam", None)),
    ],
)
def test_parse_url(url, expected):
    assert transport.parse_url(url) == expected


@pytest.mark.parametrize("url", ["http://x", "127.0.0.1:5", "udp://a:1"])
def test_parse_url_rejects_other_schemes(url):
    with pytest.raises(ValueError, match="unsupported URL"):
        transport.parse_url(url)


def test_bind_without_port_picks_a_free_one(ctx):
    sock = transport.make_socket(ctx, zmq.ROUTER, server=True)
    try:
        endpoint, port = transport.bind(sock, "tcp://127.0.0.1")
        assert endpoint == f"tcp://127.0.0.1:{port}" and port > 0
    finally:
        sock.close()


def test_bind_ipc_and_inproc_have_no_port(ctx, tmp_path):
    sock = transport.make_socket(ctx, zmq.ROUTER)
    try:
        assert transport.bind(sock, f"ipc://{tmp_path}/a")[1] is None
        assert transport.bind(sock, "inproc://transport-test")[1] is None
    finally:
        sock.close()


def test_options_are_applied(ctx):
    options = transport.SocketOptions(linger_ms=123, hwm=7, max_message_size=4096)
    server = transport.make_socket(ctx, zmq.ROUTER, options, server=True)
    client = transport.make_socket(ctx, zmq.DEALER, options)
    try:
        assert server.getsockopt(zmq.LINGER) == 123
        assert server.getsockopt(zmq.SNDHWM) == 7 and server.getsockopt(zmq.RCVHWM) == 7
        assert server.getsockopt(zmq.MAXMSGSIZE) == 4096
        assert client.getsockopt(zmq.MAXMSGSIZE) == -1
        assert client.getsockopt(zmq.IMMEDIATE) == 1
        assert client.getsockopt(zmq.TCP_KEEPALIVE) == 1
    finally:
        server.close()
        client.close()


@pytest.mark.parametrize(
    "url, suffix, expected",
    [
        ("tcp://127.0.0.1:5000", ".s", "tcp://127.0.0.1:*"),
        ("ipc:///tmp/a", ".s", "ipc:///tmp/a.s"),
        ("inproc://a", ".s", "inproc://a.s"),
    ],
)
def test_derive_endpoint(url, suffix, expected):
    assert transport.derive_endpoint(url, suffix) == expected


def test_connect_url_keeps_the_client_host_for_wildcards():
    assert (
        transport.connect_url_for("tcp://cam.local:5000", "tcp://0.0.0.0:6001")
        == "tcp://cam.local:6001"
    )
    assert transport.connect_url_for("ipc:///a", "ipc:///a.s") == "ipc:///a.s"


def test_close_quietly_is_idempotent(ctx):
    sock = ctx.socket(zmq.PAIR)
    transport.close_quietly(sock)
    transport.close_quietly(sock)
    transport.close_quietly(None)
    assert sock.closed


def test_send_and_recv_frames_round_trip(ctx):
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://frames")
        b.connect("inproc://frames")
        big = bytearray(100_000)
        transport.send_frames(a, [b"", b"head", big])
        frames = transport.recv_frames(b)
        assert [len(f) for f in frames] == [0, 4, 100_000]
        assert frames[1].bytes == b"head" and frames[1].buffer.tobytes() == b"head"
        assert [f.more for f in frames] == [True, True, False]
        assert frames[2].buffer.nbytes == 100_000
    finally:
        a.close()
        b.close()


def test_send_frames_refuses_a_bad_frame_before_sending_any(ctx):
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://bad-frames")
        b.connect("inproc://bad-frames")
        with pytest.raises(TypeError, match="frame 1"):
            transport.send_frames(a, [b"first", object()])
        transport.send_frames(a, [b"whole"])
        assert [f.bytes for f in transport.recv_frames(b)] == [b"whole"]
    finally:
        a.close()
        b.close()


def test_io_implementation_follows_the_framing_choice():
    if framing.IMPLEMENTATION == "pure":
        assert transport.IO_IMPLEMENTATION == "pure"
    assert transport.IO_IMPLEMENTATION in ("compiled", "pure")


def test_recv_frames_raises_again_without_message(ctx):
    sock = ctx.socket(zmq.PAIR)
    try:
        sock.bind("inproc://empty")
        with pytest.raises(zmq.Again):
            transport.recv_frames(sock, zmq.NOBLOCK)
    finally:
        sock.close()
