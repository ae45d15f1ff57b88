"""RPCStream: faults (lost peers, restarts) and hostile messages.

Run under both engines. Waits poll conditions with ceilings that only catch
a hang.
"""

from __future__ import annotations

import msgpack
import pytest
import zmq
from conftest import wait_until
from devices import bind_again
from streams_helpers import WAIT_S, CamServer, _frame, _hub, _hub_sub

import framerpc
from framerpc.errors import ProtocolError, RemoteError
from framerpc.transport import SocketOptions
from framerpc.wire import streams as _streamproto

# -- faults ------------------------------------------------------------------

# a bound below the proxy's own 1 s interval (the point of the first test),
# with room for a live subscriber's ping thread (Python, every 100 ms) on a
# loaded machine: at 300 ms it was once swept as silent in a full pure run
FAST_HEARTBEAT = SocketOptions(
    heartbeat_ivl_ms=100, heartbeat_timeout_ms=800, heartbeat_ttl_ms=800
)


def test_a_vanished_subscriber_is_forgotten_with_its_buffers(ctx, served, proxies):
    """A subscriber that stops talking (its socket gone without 'unsub') is
    forgotten after the heartbeat bound; a live one that does not read is
    kept: its thread pings as often as the server asks, even though its
    own proxy's heartbeat interval (1 s) is longer than the bound."""
    server = served(options=FAST_HEARTBEAT)
    proxy = proxies(server.url)
    live = proxy.frames.subscribe(policy="queue", queue=4)
    try:
        (record,) = _hub_sub(server)
        ghost = ctx.socket(zmq.DEALER)
        ghost.setsockopt(zmq.LINGER, 1000)
        ghost.connect(_hub(server).url)
        ghost.send(_streamproto.encode_control("sub", s="frames", p="queue", n=4))
        assert wait_until(lambda: server.frames.stats["subscribers"] == 2, WAIT_S)
        for i in range(2):  # taken by the live one's credit
            server.frames.publish(_frame(i))
        assert wait_until(lambda: live.received == 2, WAIT_S)
        for i in range(2, 10):
            server.frames.publish(_frame(i))
        assert server.frames.stats["pending"] == 8  # 4 each
        ghost.close()
        assert wait_until(lambda: server.frames.stats["subscribers"] == 1, WAIT_S)
        assert live.received == 2  # still subscribed, still stalled
        assert server.frames.stats["pending"] == 4  # the live one's only
        assert list(_hub(server)._subs.values()) == [record]  # never dropped
        server.frames.publish(_frame(11), {"i": "sentinel"})
        seqs = [live.get(WAIT_S)[1]["seq"] for _ in range(6)]
        assert seqs[-1] == 10
    finally:
        live.close()


def _bind_again(ctx: zmq.Context, url: str) -> CamServer:
    return bind_again(lambda: CamServer(ctx, url))


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_a_subscription_follows_a_server_restart(ctx, proxies, tmp_path, kind):
    """The new server process binds a new stream socket (tcp: a new port)
    and has a new epoch; the subscription resumes and seq starts from 0."""
    address = "tcp://127.0.0.1" if kind == "tcp" else f"ipc://{tmp_path}/cam.sock"
    first = CamServer(ctx, address)
    first.start()
    proxy = proxies(first.url)
    second = None
    with proxy.frames.subscribe(policy="latest") as sub:
        try:
            _hub_sub(first)
            for i in range(5):
                first.frames.publish(_frame(i))
            _, before = sub.get(WAIT_S)
            first.close()
            second = _bind_again(ctx, first.url)
            second.start()

            def resumed() -> bool:
                second.frames.publish(_frame(1))
                try:
                    return sub.get(0.2)[1]["epoch"] != before["epoch"]
                except TimeoutError:
                    return False

            assert wait_until(resumed, WAIT_S)
            for _ in range(3):
                second.frames.publish(_frame(2), {"tag": "after"})
            _, after = sub.get(WAIT_S)
            assert after["epoch"] == _hub(second).epoch != before["epoch"]
            assert after["seq"] < second.frames.stats["published"]
        finally:
            first.close()
            if second is not None:
                second.close()


# -- hostile messages ------------------------------------------------------------


HOSTILE = [
    [b""],
    [b"\xc1garbage"],
    [b'{"json": true}'],
    [msgpack.packb([1, 2, 3])],
    [msgpack.packb({"v": 99, "e": "sub"})],
    [msgpack.packb({"v": 1, "e": "explode"})],
    [msgpack.packb({"v": 1, "e": "sub", "s": "frames", "p": "latest", "n": 5})],
    [msgpack.packb({"v": 1, "e": "sub", "s": "frames", "p": "queue", "n": 10**9})],
    [msgpack.packb({"v": 1, "e": "sub", "s": "frames", "p": "queue", "n": True})],
    [msgpack.packb({"v": 1, "e": "sub", "s": "nope", "p": "latest", "n": 1})],
    [msgpack.packb({"v": 1, "e": "sub", "s": "x" * 900, "p": "latest", "n": 1})],
    [msgpack.packb({"v": 1, "e": "credit", "c": -5})],
    [msgpack.packb({"v": 1, "e": "credit", "c": 2**40})],
    [msgpack.packb({"v": 1, "e": "ping"}), b"extra frame"],
    [msgpack.packb({"v": 1, "e": "ping", "pad": "y" * 2000})],
    [msgpack.packb({"v": 1, "e": "sub", "s": ["frames"], "p": "latest", "n": 1})],
]


def test_hostile_stream_messages_are_refused_and_the_hub_serves_on(
    ctx, served, proxies
):
    server = served()
    proxy = proxies(server.url)
    hub = _hub(server)
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(hub.url)
    try:
        for frames in HOSTILE:
            before = hub.refused
            raw.send_multipart(frames)
            assert raw.poll(WAIT_S * 1000), frames
            reply = msgpack.unpackb(raw.recv())
            assert reply["e"] == "err" and reply["er"], frames
            assert hub.refused == before + 1
        # a huge message: libzmq drops the connection (MAXMSGSIZE), unread
        big = ctx.socket(zmq.DEALER)
        big.setsockopt(zmq.LINGER, 0)
        big.connect(hub.url)
        big.send(b"\x00" * (1 << 20))
        big.close()
        # credit and ping of a stranger: it is told to subscribe
        raw.send(_streamproto.encode_control("credit", c=1))
        assert raw.poll(WAIT_S * 1000)
        assert msgpack.unpackb(raw.recv())["e"] == "nosub"
        assert hub.is_alive()
        with proxy.frames.subscribe(policy="latest") as sub:
            _hub_sub(server)
            server.frames.publish(b"still serving")
            assert bytes(sub.get(WAIT_S)[0]) == b"still serving"
    finally:
        raw.close()


def test_subscriber_side_checks_server_messages():
    with pytest.raises(ProtocolError):
        _streamproto.decode_incoming([b"\x93\x01\x02\x03"])
    meta = _streamproto.encode_meta(1, 0, 5)
    with pytest.raises(ProtocolError):
        _streamproto.decode_incoming([meta])  # a frame without its body
    with pytest.raises(ProtocolError):
        bad = msgpack.packb({"v": 1, "e": "frame", "q": -1, "d": 0, "ep": 1})
        _streamproto.decode_incoming([bad, b"", b""])


def test_a_refused_subscription_raises_in_the_consumer(served, proxies):
    """A proxy declaring a stream the server lacks gets a clear error."""

    class Other:
        other = framerpc.RPCStream()

    server = served()
    proxy = framerpc.connect(Other, server.context, server.url)
    try:
        with pytest.raises(RuntimeError, match="no stream 'other'"):
            proxy.other.subscribe()
        # the server refuses a name it lacks even when asked directly
        handle = proxy.other
        handle.url = _hub(server).url
        with pytest.raises(RemoteError, match="no stream"):
            handle.subscribe()
    finally:
        proxy.close()
