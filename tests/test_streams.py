"""RPCStream: per-subscriber flow control, faults, hostile messages, interop.

Run under both engines (``FRAMERPC_PURE=1`` for the pure one). No test
measures speed: they wait on events or poll conditions with ceilings that
only catch a hang.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import msgpack
import numpy as np
import pytest
import zmq
from conftest import wait_until

import framerpc
from framerpc import legacy, transport
from framerpc.client.subscription import Subscription
from framerpc.errors import ProtocolError, RemoteError, SerializationError
from framerpc.server.streams import StreamHub, StreamPublisher
from framerpc.stream import MAX_QUEUE, check_policy
from framerpc.transport import SocketOptions
from framerpc.wire import streams as _streamproto

#: Ceiling (s) of every wait: catches a hang, never a speed check.
WAIT_S = 20


class Cam:
    """An interface with a stream and a method."""

    frames = framerpc.RPCStream(doc="sensor images")

    def ping(self) -> str:
        """Answer "pong"."""
        raise NotImplementedError


class CamServer(Cam, framerpc.RPCServer):
    @framerpc.RPCServer.register_method_json
    def ping(self) -> str:
        return "pong"


def _hub(server: CamServer) -> StreamHub:
    hub = server._stream_hub
    assert hub is not None
    return hub


def _hub_sub(server: CamServer, count: int = 1):
    """The hub's subscriber record once there are ``count`` of them."""
    hub = _hub(server)
    assert wait_until(lambda: len(hub._subs) >= count, WAIT_S)
    return list(hub._subs.values())


def _frame(seq_value: int, size: int = 64) -> np.ndarray:
    return np.full(size, seq_value % 251, dtype=np.uint8)


@pytest.fixture
def served(ctx: zmq.Context) -> Iterator[Callable[..., CamServer]]:
    """Make and start CamServers; all closed at the end."""
    servers: list[CamServer] = []

    def make(url: str = "tcp://127.0.0.1", **kwargs) -> CamServer:
        server = CamServer(ctx, url, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def proxies(ctx: zmq.Context) -> Iterator[Callable[..., Cam]]:
    made: list = []

    def make(url: str, **kwargs) -> Cam:
        proxy = framerpc.connect(Cam, ctx, url, **kwargs)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


# -- the model ---------------------------------------------------------------


def test_declared_stream_on_a_plain_object_says_it_is_not_served():
    class Plain(Cam):
        pass

    with pytest.raises(RuntimeError, match="not served"):
        Plain().frames.publish(b"x")
    with pytest.raises(RuntimeError, match="not a proxy"):
        Plain().frames.subscribe()
    assert Cam.frames.name == "frames"
    assert "RPCStream" in framerpc.__all__


@pytest.mark.parametrize(
    ("policy", "queue", "window"),
    [
        ("latest", None, 1),
        ("queue", None, 8),
        ("queue", 3, 3),
        ("queue", MAX_QUEUE, MAX_QUEUE),
    ],
)
def test_policy_windows(policy, queue, window):
    assert check_policy(policy, queue) == window


@pytest.mark.parametrize(
    ("policy", "queue"),
    [
        ("newest", None),
        ("latest", 4),
        ("queue", 0),
        ("queue", MAX_QUEUE + 1),
        ("queue", 2.0),
    ],
)
def test_bad_policies_are_refused(policy, queue):
    with pytest.raises(ValueError):
        check_policy(policy, queue)


# -- delivery ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "ipc", "inproc"])
def test_frames_arrive_read_only_with_info(served, proxies, tmp_path, kind):
    url = {
        "tcp": "tcp://127.0.0.1",
        "ipc": f"ipc://{tmp_path}/cam.sock",
        "inproc": "inproc://stream-cam",
    }[kind]
    server = served(url)
    proxy = proxies(server.url)
    image = np.arange(48, dtype=np.uint16).reshape(4, 4, 3)
    with proxy.frames.subscribe(policy="queue", queue=4) as sub:
        assert sub.subscribed.wait(WAIT_S)
        _hub_sub(server)
        server.frames.publish(image, {"exposure": 2.5})
        server.frames.publish(b"raw bytes", {"kind": "raw"})
        frame, info = sub.get(WAIT_S)
        assert frame.dtype == np.uint16 and frame.shape == (4, 4, 3)
        assert np.array_equal(frame, image)
        assert not frame.flags.writeable
        assert info["exposure"] == 2.5 and info["seq"] == 0 and info["dropped"] == 0
        assert type(info["t"]) is float and type(info["epoch"]) is int
        raw, info = sub.get(WAIT_S)
        assert (
            isinstance(raw, memoryview) and raw.readonly and bytes(raw) == b"raw bytes"
        )
        assert info == {**info, "kind": "raw", "seq": 1, "dropped": 0}


def test_publish_copies_by_default(served, proxies):
    """A camera reusing its buffer right after publish does not tear the
    frame subscribers get."""
    server = served()
    proxy = proxies(server.url)
    with proxy.frames.subscribe(policy="queue", queue=4) as sub:
        hub_sub = _hub_sub(server)[0]
        assert wait_until(lambda: hub_sub.credit == 2, WAIT_S)
        buffer = np.zeros(100_000, dtype=np.uint8)
        raw = bytearray(50_000)
        server.frames.publish(buffer)
        buffer[:] = 7  # the camera writes the next image into the same array
        server.frames.publish(raw)
        raw[:] = b"\x07" * len(raw)
        frame, _ = sub.get(WAIT_S)
        assert not frame.any()
        frame, _ = sub.get(WAIT_S)
        assert not any(frame)


def test_publish_refuses_what_cannot_travel(served):
    server = served()
    with pytest.raises(TypeError, match="numpy arrays or bytes-like"):
        server.frames.publish("text")
    with pytest.raises(TypeError, match="info must be a dict"):
        server.frames.publish(b"x", [1])
    with pytest.raises(SerializationError):
        server.frames.publish(b"x", {"bad": object()})
    assert server.frames.stats["published"] == 0


def test_frames_published_before_anyone_subscribed_take_a_seq(served, proxies):
    server = served()
    for _ in range(3):
        server.frames.publish(np.zeros(10))  # nobody listens: no copy, a seq
    proxy = proxies(server.url)
    with proxy.frames.subscribe() as sub:
        server.frames.publish(b"first heard")
        frame, info = sub.get(WAIT_S)
    assert bytes(frame) == b"first heard" and info["seq"] == 3
    assert info["dropped"] == 0  # not dropped for it: it was not subscribed
    assert server.frames.stats["published"] == 4


def test_latest_never_delivers_an_older_frame_after_a_newer(served, proxies):
    """A slowish consumer: the seqs it sees only grow, each frame holds what
    was published with its seq, drops add up, and the last frame arrives."""
    server = served()
    proxy = proxies(server.url)
    total = 300
    seen: list[tuple[int, int]] = []
    with proxy.frames.subscribe(policy="latest") as sub:
        _hub_sub(server)

        def publish() -> None:
            for i in range(total):
                server.frames.publish(_frame(i), {"i": i})

        publisher = threading.Thread(target=publish)
        publisher.start()
        dropped = 0
        while True:
            frame, info = sub.get(WAIT_S)
            assert int(frame[0]) == info["i"] % 251 and info["seq"] == info["i"]
            seen.append((info["seq"], info["dropped"]))
            dropped += info["dropped"]
            if info["i"] == total - 1:
                break
            time.sleep(0.001)  # slower than the publisher: drops happen
        publisher.join()
    seqs = [s for s, _ in seen]
    assert seqs == sorted(set(seqs))
    assert len(seqs) + dropped == total  # subscribed before the first
    assert sub.dropped == dropped


def test_queue_drops_the_oldest_and_counts_exactly(served, proxies):
    """queue=4, consumer stalled: the 2 frames let ahead by its credit, then
    the newest 4; the 14 in between are dropped, counted on both sides."""
    server = served()
    proxy = proxies(server.url)
    with proxy.frames.subscribe(policy="queue", queue=4) as sub:
        hub_sub = _hub_sub(server)[0]
        assert wait_until(lambda: hub_sub.credit == 2, WAIT_S)
        for i in range(2):  # taken by its credit: now it has none left
            server.frames.publish(_frame(i), {"i": i})
        assert wait_until(lambda: sub.received == 2, WAIT_S)
        for i in range(2, 20):
            server.frames.publish(_frame(i), {"i": i})
        assert server.frames.stats["pending"] == 4
        got = [sub.get(WAIT_S) for _ in range(6)]
        assert [info["seq"] for _, info in got] == [0, 1, 16, 17, 18, 19]
        assert [info["dropped"] for _, info in got] == [0, 0, 14, 0, 0, 0]
        assert [int(f[0]) for f, _ in got] == [0, 1, 16, 17, 18, 19]
        assert sub.dropped == 14 and server.frames.stats["dropped"] == 14
        server.frames.publish(_frame(99), {"i": "sentinel"})
        assert sub.get(WAIT_S)[1]["i"] == "sentinel"  # nothing else came first


def test_callback_form_and_latest(served, proxies):
    server = served()
    proxy = proxies(server.url)
    got: list[int] = []
    done = threading.Event()

    def on_frame(frame, info) -> None:
        got.append(info["seq"])
        if len(got) == 5:
            done.set()

    sub = proxy.frames.subscribe(on_frame, policy="queue", queue=8)
    try:
        _hub_sub(server)
        for i in range(5):
            server.frames.publish(_frame(i))
        assert done.wait(WAIT_S)
        assert got == [0, 1, 2, 3, 4]
    finally:
        sub.close()

    def one() -> tuple:
        return proxy.frames.latest(WAIT_S)

    result: list = []
    getter = threading.Thread(target=lambda: result.append(one()))
    getter.start()
    assert wait_until(lambda: server.frames.stats["subscribers"] == 1, WAIT_S)
    assert wait_until(
        lambda: (server.frames.publish(b"one"), result)[1] or not getter.is_alive(),
        WAIT_S,
    )
    getter.join(WAIT_S)
    frame, info = result[0]
    assert bytes(frame) == b"one" and info["seq"] >= 5
    # latest() ended its subscription
    assert wait_until(lambda: server.frames.stats["subscribers"] == 0, WAIT_S)


def test_close_ends_an_iteration_in_another_thread(served, proxies):
    server = served()
    proxy = proxies(server.url)
    sub = proxy.frames.subscribe()
    ended = threading.Event()

    def consume() -> None:
        for _ in sub:
            pass
        ended.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    _hub_sub(server)
    sub.close()
    assert ended.wait(WAIT_S)
    consumer.join(WAIT_S)
    with pytest.raises(EOFError):
        sub.get(0)


def test_a_stalled_subscriber_neither_slows_a_fast_one_nor_grows_memory(
    served, proxies
):
    """The publisher goes in lockstep with the fast subscriber: it gets every
    frame while a latest and a queue=3 subscriber never read. The published
    arrays (lent without a copy) still alive stay within the stalled ones'
    bounds: pending window plus credit."""
    server = served()
    proxy = proxies(server.url)
    stalled_latest = proxy.frames.subscribe(policy="latest")
    stalled_queue = proxy.frames.subscribe(policy="queue", queue=3)
    fast = proxy.frames.subscribe(policy="queue", queue=2)
    try:
        subs = _hub_sub(server, 3)
        assert wait_until(lambda: all(s.credit == s.cap for s in subs), WAIT_S)
        alive: list[weakref.ref] = []
        for i in range(200):
            array = _frame(i, 100_000)
            alive.append(weakref.ref(array))
            server.frames.publish(array, {"i": i}, copy=False)
            del array
            frame, info = fast.get(WAIT_S)
            assert info["i"] == i and info["dropped"] == 0
            del frame
        stats = server.frames.stats
        assert stats["pending"] <= 1 + 3
        # latest: 1 pending + 1 sent; queue=3: 3 pending + 2 sent; the fast
        # one's last frame may still be in flight or held by pyzmq
        bound = 2 + 5 + 2

        def within() -> bool:
            gc.collect()
            return sum(ref() is not None for ref in alive) <= bound

        assert wait_until(within, WAIT_S)
        assert stalled_latest.received == 1 and stalled_queue.received == 2
        _, info = stalled_latest.get(WAIT_S)
        assert info["seq"] == 0
        _, info = stalled_latest.get(WAIT_S)  # the newest, after drops
        assert info["seq"] == 199 and info["dropped"] == 198
    finally:
        for sub in (stalled_latest, stalled_queue, fast):
            sub.close()


# -- faults ------------------------------------------------------------------

FAST_HEARTBEAT = SocketOptions(
    heartbeat_ivl_ms=100, heartbeat_timeout_ms=300, heartbeat_ttl_ms=300
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
    deadline = time.monotonic() + 5
    while True:
        try:
            return CamServer(ctx, url)
        except zmq.ZMQError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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


# -- interop -----------------------------------------------------------------


def test_inventory_lists_streams_natively_but_never_in_json(served, proxies):
    server = served()
    inventory = server._inventory()
    assert inventory["streams"] == ["frames"]
    assert inventory["stream_url"] == _hub(server).url
    text = bytes(legacy.encode_inventory(inventory)[0])
    assert b"stream" not in text


def test_an_auto_proxy_finds_the_stream_url_natively(served, ctx):
    server = served()
    proxy = framerpc.connect(Cam, ctx, server.url, protocol="auto")
    try:
        assert proxy.frames.url is None  # the JSON inventory has no streams
        with proxy.frames.subscribe() as sub:
            _hub_sub(server)
            server.frames.publish(b"x")
            assert bytes(sub.get(WAIT_S)[0]) == b"x"
        assert proxy.frames.url == transport.connect_url_for(
            server.url, _hub(server).url
        )
    finally:
        proxy.close()


def test_a_legacy_proxy_has_no_streams(served, ctx):
    server = served()
    proxy = framerpc.connect(Cam, ctx, server.url, protocol="legacy")
    try:
        with pytest.raises(RuntimeError, match="older JSON protocol"):
            proxy.frames.subscribe()
    finally:
        proxy.close()


def test_servers_without_streams_are_unchanged(ctx, serve):
    from devices import CameraServer

    server = serve(CameraServer(ctx, "tcp://127.0.0.1"))
    assert server._stream_hub is None
    assert "streams" not in server._inventory()


def test_closing_the_proxy_ends_its_subscriptions(served, ctx):
    server = served()
    proxy = framerpc.connect(Cam, ctx, server.url)
    sub = proxy.frames.subscribe()
    assert isinstance(sub, Subscription)
    _hub_sub(server)
    proxy.close()
    assert not sub.is_alive()
    assert wait_until(lambda: server.frames.stats["subscribers"] == 0, WAIT_S)
    with pytest.raises(RuntimeError, match="closed"):
        proxy.frames.subscribe()


def test_the_server_publisher_is_a_stream(served):
    server = served()
    assert isinstance(server.frames, StreamPublisher)
    assert isinstance(server.frames, framerpc.RPCStream)


def test_context_destroy_stops_hub_and_subscriptions():
    """``ctx.destroy()`` with a subscription live: every stream thread ends
    and closes its own sockets, so the context terminates."""
    ctx = zmq.Context()
    server = CamServer(ctx, "tcp://127.0.0.1")
    server.start()
    proxy = framerpc.connect(Cam, ctx, server.url)
    sub = proxy.frames.subscribe()
    hub = _hub(server)
    server.frames.publish(b"x")
    sub.get(WAIT_S)
    closer = threading.Thread(target=ctx.destroy, kwargs={"linger": 0})
    closer.start()
    closer.join(WAIT_S)
    assert not closer.is_alive(), "context.destroy() hung"
    for thread in (sub, hub, server._thread):
        thread.join(WAIT_S)
        assert not thread.is_alive()
    server.frames.publish(b"after")  # dropped quietly: nobody is left


def test_subscriptions_beyond_the_limit_are_refused(served, proxies, monkeypatch):
    from framerpc.server import streams as _streamhub

    monkeypatch.setattr(_streamhub, "MAX_SUBSCRIBERS", 1)
    server = served()
    proxy = proxies(server.url)
    with proxy.frames.subscribe() as first:
        with pytest.raises(RemoteError, match="more than 1 subscribers"):
            proxy.frames.subscribe()
        server.frames.publish(b"first still served")
        assert bytes(first.get(WAIT_S)[0]) == b"first still served"


def test_streams_under_curve_serve_allowed_keys_only(ctx, proxies, tmp_path):
    """The stream socket is secured like the others: an allowed proxy
    receives frames; a socket with a key not allowed is never subscribed."""
    import dataclasses
    import shutil

    from framerpc.security import Security, generate_keys

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server_public, server_secret = generate_keys(tmp_path / "server", "srv")
    alice_public, alice_secret = generate_keys(tmp_path / "alice", "alice")
    shutil.copy(alice_public, allowed / alice_public.name)
    _, mallory_secret = generate_keys(tmp_path / "mallory", "mallory")

    def options(settings: Security) -> SocketOptions:
        return dataclasses.replace(SocketOptions(), security=settings)

    server = CamServer(
        ctx,
        "tcp://127.0.0.1",
        options=options(
            Security.from_files(server_secret, allowed_clients_dir=allowed)
        ),
    )
    server.start()
    try:
        alice = Security.from_files(alice_secret, server_public_file=server_public)
        proxy = proxies(server.url, options=options(alice))
        mallory = Security.from_files(mallory_secret, server_public_file=server_public)
        intruder = transport.make_socket(ctx, zmq.DEALER, options(mallory))
        intruder.setsockopt(zmq.IMMEDIATE, 0)  # queue it: it must still not arrive
        intruder.connect(_hub(server).url)
        intruder.send(_streamproto.encode_control("sub", s="frames", p="latest", n=1))
        with proxy.frames.subscribe() as sub:
            server.frames.publish(b"for alice")
            assert bytes(sub.get(WAIT_S)[0]) == b"for alice"
            assert server.frames.stats["subscribers"] == 1
        intruder.close(linger=0)
    finally:
        server.close()


def test_a_subscription_survives_a_hostile_server(ctx, served, proxies):
    """Garbage from the stream socket is logged and skipped: the frames
    after it still arrive, in order."""
    from framerpc import framing
    from framerpc.wire._framing_common import OutOfBand

    server = served()
    proxy = proxies(server.url)
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    port = fake.bind_to_random_port("tcp://127.0.0.1")
    done = threading.Event()

    def serve_badly() -> None:
        assert fake.poll(WAIT_S * 1000)
        identity, _ = fake.recv_multipart()  # "sub"
        ok = _streamproto.encode_control("ok", s="frames", ep=7, n=1, pi=0)
        body = framing.encode({"t": 1.0, "in": {}, "x": OutOfBand(b"good")})
        bad_body = framing.encode({"t": "x", "in": 3, "x": 5})
        for message in (
            [b"\xc1"],
            [msgpack.packb({"v": 1, "e": "frame", "q": 0, "d": 0, "ep": 7})],
            [_streamproto.encode_meta(0, 0, 7), *bad_body],
            [_streamproto.encode_meta(1, 0, 7), b"\x00" * 10, b"junk"],
            ok,
            [_streamproto.encode_meta(5, 0, 7), *body],
        ):
            parts = message if isinstance(message, list) else [message]
            fake.send_multipart([identity, *parts])
        done.wait(WAIT_S)

    thread = threading.Thread(target=serve_badly)
    thread.start()
    try:
        handle = proxy.frames
        handle.url = f"tcp://127.0.0.1:{port}"
        with handle.subscribe() as sub:
            frame, info = sub.get(WAIT_S)
            assert bytes(frame) == b"good" and info["seq"] == 5
            assert info["epoch"] == 7
    finally:
        done.set()
        thread.join(WAIT_S)
        fake.close()


def test_subscribe_to_a_server_that_is_down_returns_and_logs(served, proxies, caplog):
    """No acknowledgement within the proxy's timeout: subscribe returns
    (the subscription goes on trying) with a warning; nothing hangs."""
    from conftest import finishes_within

    server = served()
    proxy = proxies(server.url, timeout=300)
    proxy.frames._resolve()  # the URL is known; now the server goes away
    server.close()
    with caplog.at_level("WARNING", logger="framerpc"):
        sub = finishes_within(WAIT_S, lambda: proxy.frames.subscribe())
    try:
        assert not sub.subscribed.is_set()
        assert "not confirmed" in caplog.text
        with pytest.raises(TimeoutError):
            sub.get(0.05)
    finally:
        sub.close()
