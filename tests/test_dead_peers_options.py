"""Dead peers are noticed (issue 11): the heartbeat options, and the Channel and its
PeerWatch in process, in both engines.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import zmq
from conftest import wait_until
from dead_peer_helpers import (
    FAST,
    FAST_IVL_MS,
    FAST_TIMEOUT_MS,
    HANG_BOUND_S,
    _call_in_thread,
)
from engines import CALLPATH_ENGINES

from framerpc import PeerLostError, protocol
from framerpc._peerwatch import PeerWatch
from framerpc.transport import DEFAULT_OPTIONS, SocketOptions, make_socket

ENGINES = CALLPATH_ENGINES


# -- options ----------------------------------------------------------------------


def test_heartbeat_options_reach_the_socket(ctx):
    options = SocketOptions(
        heartbeat_ivl_ms=700, heartbeat_timeout_ms=2100, heartbeat_ttl_ms=3500
    )
    sock = make_socket(ctx, zmq.DEALER, options)
    try:
        assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 700
        assert sock.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 2100
        assert sock.getsockopt(zmq.HEARTBEAT_TTL) == 3500
    finally:
        sock.close()
    assert options.dead_peer_ms == 2800
    assert DEFAULT_OPTIONS.dead_peer_ms is not None
    assert DEFAULT_OPTIONS.dead_peer_ms <= 5000
    assert SocketOptions(heartbeat_ivl_ms=0).dead_peer_ms is None


def test_server_sockets_heartbeat_too(ctx, address):
    from dead_peer_device import ProbeServer

    server = ProbeServer(ctx, address, options=FAST)
    try:
        assert server._socket.getsockopt(zmq.HEARTBEAT_IVL) == FAST_IVL_MS
        assert server._socket.getsockopt(zmq.HEARTBEAT_TIMEOUT) == FAST_TIMEOUT_MS
    finally:
        server._close_sockets()


_FROZEN_CLIENT = """
import sys, zmq
from framerpc.transport import SocketOptions, make_socket
ctx = zmq.Context()
sock = make_socket(ctx, zmq.DEALER, SocketOptions(heartbeat_ivl_ms=0))  # no TTL
sock.connect(sys.argv[1])
sock.send(b"hello")
print("sent", flush=True)
sys.stdin.read()
"""


def test_server_socket_drops_a_frozen_client(ctx):
    """A bound socket with heartbeats closes the connection of a client
    that froze (its kernel keeps TCP up), even one that sends no
    heartbeats itself: nothing stays queued for it."""
    router = make_socket(ctx, zmq.ROUTER, FAST, server=True)
    monitor = router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    router.bind("tcp://127.0.0.1:*")
    url = router.getsockopt_string(zmq.LAST_ENDPOINT)
    client = subprocess.Popen(
        [sys.executable, "-c", _FROZEN_CLIENT, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "sent"
        assert router.poll(HANG_BOUND_S * 1000)
        router.recv_multipart()
        client.send_signal(signal.SIGSTOP)
        limit_ms = (FAST.dead_peer_ms / 1000 + HANG_BOUND_S) * 1000
        assert monitor.poll(limit_ms), "the frozen client was never dropped"
    finally:
        client.kill()
        client.wait(timeout=HANG_BOUND_S)
        for stream in (client.stdin, client.stdout):
            if stream is not None:
                stream.close()
        router.disable_monitor()
        monitor.close(linger=0)
        router.close(linger=0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("heartbeat_ivl_ms", -1),
        ("heartbeat_timeout_ms", -5),
        ("heartbeat_ttl_ms", 1 << 24),
    ],
)
def test_bad_heartbeat_options_are_refused_with_their_name(ctx, field, value):
    with pytest.raises(ValueError, match=field):
        make_socket(ctx, zmq.DEALER, SocketOptions(**{field: value}))


# -- the Channel and its PeerWatch, in process, both engines --------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_channel_call_fails_when_its_server_goes_away(ctx, engine):
    """A request the server received but will never answer: closing the
    server's socket ends the connection, and the call without timeout
    raises PeerLostError instead of waiting for ever."""
    router = make_socket(ctx, zmq.ROUTER, server=True)
    router.bind("tcp://127.0.0.1:*")
    url = router.getsockopt_string(zmq.LAST_ENDPOINT)
    dealer = make_socket(ctx, zmq.DEALER)
    watch = PeerWatch(dealer, url, DEFAULT_OPTIONS.dead_peer_ms)
    channel = engine.Channel(dealer, url)
    channel.watch = watch
    try:
        dealer.connect(url)
        frames = protocol.encode_call(7, "echo", [], {})
        thread, outcome = _call_in_thread(lambda: channel.request(frames, 7, None))
        assert router.poll(HANG_BOUND_S * 1000), "the request never arrived"
        router.recv_multipart()
        router.close(linger=0)
        thread.join(HANG_BOUND_S)
        assert not thread.is_alive(), "the call outlived its server"
        assert isinstance(outcome.get("error"), PeerLostError), outcome
        assert watch.losses == 1 and not watch.up
    finally:
        router.close(linger=0)
        watch.close()
        dealer.close(linger=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_channel_ignores_a_disconnect_from_before_its_request(ctx, engine):
    """A server that went away and came back between two calls costs the
    next call nothing: the old disconnect is read before the request."""
    router = make_socket(ctx, zmq.ROUTER, server=True)
    router.bind("tcp://127.0.0.1:*")
    url = router.getsockopt_string(zmq.LAST_ENDPOINT)
    dealer = make_socket(ctx, zmq.DEALER)
    watch = PeerWatch(dealer, url, DEFAULT_OPTIONS.dead_peer_ms)
    channel = engine.Channel(dealer, url)
    channel.watch = watch
    second = None
    try:
        dealer.connect(url)
        assert wait_until(lambda: (watch.drain(), watch.up)[1], HANG_BOUND_S)
        router.close(linger=0)
        assert wait_until(lambda: (watch.drain(), not watch.up)[1], HANG_BOUND_S)
        second = make_socket(ctx, zmq.ROUTER, server=True)
        second.bind(url)
        # the events of the reconnection stay queued until the next call
        deadline = time.monotonic() + HANG_BOUND_S
        while not dealer.poll(10, zmq.POLLOUT):
            assert time.monotonic() < deadline, "no reconnection"
        frames = protocol.encode_call(8, "echo", [], {})
        thread, outcome = _call_in_thread(lambda: channel.request(frames, 8, None))
        # answer only after a few wait slices, each of which checks the watch
        assert second.poll(HANG_BOUND_S * 1000)
        envelope = second.recv_multipart()[:2]
        time.sleep(0.35)
        second.send_multipart(envelope + protocol.encode_result(8, "ok"))
        thread.join(HANG_BOUND_S)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome
        assert outcome["value"].value == "ok"
    finally:
        router.close(linger=0)
        if second is not None:
            second.close(linger=0)
        watch.close()
        dealer.close(linger=0)
