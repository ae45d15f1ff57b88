"""Socket helpers: URL parsing, binding on free ports, tuned options."""

from __future__ import annotations

import threading

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
    "refused", [{"hwm": -5}, {"linger_ms": -7}, {"reconnect_ivl_ms": -3}]
)
def test_an_option_libzmq_refuses_leaves_no_socket_open(refused):
    # make_socket raised with the socket still open: the context's term()
    # then waited for it for ever (a typo in SocketOptions hung shutdown)
    # until the error is dropped (its traceback holds make_socket's frame)
    context = zmq.Context()
    with pytest.raises(zmq.ZMQError) as refusal:
        transport.make_socket(context, zmq.DEALER, transport.SocketOptions(**refused))
    terminating = threading.Thread(target=context.term, daemon=True)
    terminating.start()
    terminating.join(10)
    hung = terminating.is_alive()
    del refusal  # lets term() return if the socket was left open
    terminating.join(10)
    assert not hung


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


class _TerminatesAfterOneSocket:
    """A context that term() reaches between two sockets: the first is
    made, the next raises ETERM (as pyzmq does)."""

    def __init__(self, context: zmq.Context) -> None:
        self.context = context
        self.made: list[zmq.Socket] = []

    def socket(self, kind: int) -> zmq.Socket:
        if self.made:
            raise zmq.ZMQError(zmq.ETERM)
        self.made.append(self.context.socket(kind))
        return self.made[-1]


def test_a_waker_made_as_the_context_terminates_leaves_no_socket_open(ctx):
    # its PULL stayed open when the PUSH could not be made: term() waited
    # for it for ever
    from framerpc.transport.waker import Waker

    context = _TerminatesAfterOneSocket(ctx)
    with pytest.raises(zmq.ZMQError):
        Waker(context)  # type: ignore[arg-type]
    try:
        assert context.made[0].closed
    finally:
        context.made[0].close(linger=0)
