"""FramePool (issue 14, the socket path): a pool frame is never torn, its
slot comes back only after every receiver is done with it, acquire is
bounded in depth and in time. Plus what a plain reused array does today
(the reason for the pool), shown deterministically.

Every frame here is filled with one value, its sequence number, which the
reply's info (or the signal's second argument) also carries: a frame with
any other value anywhere was torn (rows of two frames) or stale (a later
frame than its info says).
"""

from __future__ import annotations

import dataclasses
import gc
import queue
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from conftest import wait_until

import framerpc
from framerpc import FramePool, RPCClient, RPCServer, RPCSignal, protocol, transport
from framerpc.pool import DEFAULT_ACQUIRE_TIMEOUT_S
from framerpc.transport import DEFAULT_OPTIONS

# 256 KiB frames: over both engines' zero-copy thresholds (16 KiB compiled,
# 64 KiB pure), so they are lent to libzmq, not copied.
SHAPE = (64, 1024)
DTYPE = np.uint32


def _free(pool: FramePool) -> int:
    """Free slots once the buffers libzmq gave back are released (the
    compiled engine does that at its next send or receive)."""
    transport.release_returned_buffers()
    return pool.available


def _check(frame: np.ndarray, seq: int) -> bool:
    return bool(np.all(frame == seq))


# -- the pool alone ----------------------------------------------------------
def test_acquire_gives_writable_frames_of_the_pool_shape():
    pool = FramePool((3, 4), np.uint16, depth=2)
    frame = pool.acquire()
    assert frame.shape == (3, 4) and frame.dtype == np.uint16
    assert frame.flags.writeable and frame.flags.c_contiguous
    frame[:] = 7
    assert _check(frame, 7)
    assert pool.depth == 2 and pool.nbytes == 24 and "FramePool" in repr(pool)
    assert isinstance(framerpc.FramePool(5, "f4", 1).acquire(), np.ndarray)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2)])
def test_zero_d_and_empty_frames(shape: tuple[int, ...]):
    pool = FramePool(shape, np.float32, depth=1)
    frame = pool.acquire()
    assert frame.shape == shape and frame.dtype == np.float32
    del frame
    assert pool.available == 1


def test_depth_bounds_the_frames_out_and_acquire_times_out():
    pool = FramePool(SHAPE, DTYPE, depth=3)
    frames = [pool.acquire(timeout=0) for _ in range(3)]
    assert pool.available == 0
    # three distinct slots
    addresses = {f.__array_interface__["data"][0] for f in frames}
    assert len(addresses) == 3
    with pytest.raises(TimeoutError, match="3 slots"):
        pool.acquire(timeout=0)
    with pytest.raises(TimeoutError):
        pool.acquire(timeout=0.05)
    del frames[0]
    assert pool.available == 1
    pool.acquire(timeout=0)


def test_the_default_wait_is_finite():
    assert 0 < DEFAULT_ACQUIRE_TIMEOUT_S < float("inf")
    pool = FramePool(4, np.uint8, depth=1, timeout=0.05)
    held = pool.acquire()
    with pytest.raises(TimeoutError):
        pool.acquire()  # None: the pool's timeout, not for ever
    del held


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_a_timeout_must_be_finite_and_not_negative(bad: float):
    pool = FramePool(4, np.uint8, depth=1)
    with pytest.raises(ValueError, match="timeout"):
        pool.acquire(timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        FramePool(4, np.uint8, depth=1, timeout=bad)
    assert pool.available == 1  # nothing lost


@pytest.mark.parametrize(
    "args, error",
    [
        (((4,), np.uint8, 0), ValueError),
        (((4,), np.uint8, 1.5), TypeError),
        (((-1,), np.uint8, 1), ValueError),
        (((4,), object, 1), TypeError),
        (((4,), [("a", "u1"), ("b", "f4")], 1), TypeError),
    ],
)
def test_bad_pool_arguments_are_refused(args: tuple, error: type):
    with pytest.raises(error):
        FramePool(*args)


def test_views_keep_the_slot_out():
    pool = FramePool(SHAPE, DTYPE, depth=1)
    frame = pool.acquire()
    row = frame[3]
    flat = frame.reshape(-1).view(np.uint8)
    buffer = memoryview(frame)
    del frame
    assert pool.available == 0
    del row, flat
    assert pool.available == 0
    buffer.release()
    del buffer
    assert pool.available == 1


def test_a_frame_in_a_reference_cycle_comes_back_at_collection():
    pool = FramePool(4, np.uint8, depth=1)
    cycle: list[Any] = [pool.acquire()]
    cycle.append(cycle)
    del cycle
    gc.collect()
    assert pool.available == 1


def test_acquire_wakes_when_a_slot_comes_back_from_another_thread():
    pool = FramePool(SHAPE, DTYPE, depth=1)
    held: list[Any] = [pool.acquire()]
    waiting = threading.Event()
    got: queue.Queue = queue.Queue()

    def wait_for_slot() -> None:
        waiting.set()
        got.put(pool.acquire(timeout=20))

    thread = threading.Thread(target=wait_for_slot)
    thread.start()
    assert waiting.wait(10)
    held.clear()  # the slot comes back
    frame = got.get(timeout=20)
    thread.join(10)
    assert frame.shape == SHAPE


# -- a camera serving pool frames --------------------------------------------
class CameraAPI:
    frame_ready = RPCSignal(np.ndarray, int)

    def grab(self) -> tuple:
        raise NotImplementedError

    def fresh(self, seq: int) -> tuple:
        raise NotImplementedError

    def plain(self, seq: int) -> tuple:
        raise NotImplementedError

    def ping(self) -> int:
        raise NotImplementedError


class PoolCamera(CameraAPI, RPCServer):
    """Serves the latest pool frame (``grab``), a frame acquired per call
    and kept by no one (``fresh``), or one plain array refilled in place
    (``plain``, the pattern that tears)."""

    def __init__(self, ctx: zmq.Context, url: str, pool: FramePool, **kw: Any):
        self.pool = pool
        self.served = threading.Event()
        self.calls = 0  # of fresh and plain
        self.plain_frame = np.zeros(pool.shape, pool.dtype)
        self._latest: tuple[np.ndarray, int] | None = None
        self._lock = threading.Lock()
        RPCServer.__init__(self, ctx, url, **kw)

    def publish(self, frame: np.ndarray, seq: int) -> None:
        with self._lock:
            self._latest = (frame, seq)

    @RPCServer.register_method_buffer(timeout=20000)
    def grab(self) -> tuple:
        with self._lock:
            assert self._latest is not None
            frame, seq = self._latest
        return frame, {"seq": seq}

    @RPCServer.register_method_buffer(timeout=20000)
    def fresh(self, seq: int) -> tuple:
        frame = self.pool.acquire(timeout=0)
        frame[...] = seq
        self.calls += 1
        self.served.set()
        return frame, {"seq": seq}

    @RPCServer.register_method_buffer(timeout=20000)
    def plain(self, seq: int) -> tuple:
        self.plain_frame[...] = seq
        self.calls += 1
        self.served.set()
        return self.plain_frame, {"seq": seq}

    @RPCServer.register_method_json
    def ping(self) -> int:
        return 1


@RPCClient.register_interface(CameraAPI)
class CameraProxy(CameraAPI, RPCClient):
    pass


@pytest.fixture
def make_camera(ctx: zmq.Context, serve: Callable) -> Callable[..., PoolCamera]:
    def make(url: str, pool: FramePool, **kw: Any) -> PoolCamera:
        return serve(PoolCamera(ctx, url, pool, **kw))

    return make


def test_pool_frames_are_never_torn(ctx, url, make_camera):
    """Three clients fetch while a writer refills the pool as fast as it
    can and emits every tenth frame; every frame received matches its
    sequence number, also when checked again one fetch later (over
    inproc:// the client's array is the slot's own memory)."""
    # few slots: a slot given back too early would be refilled within
    # microseconds, while its frame is still being sent or read
    pool = FramePool(SHAPE, DTYPE, depth=6)
    camera = make_camera(url, pool)
    first = pool.acquire()
    first[...] = 1
    camera.publish(first, 1)
    del first
    stop = threading.Event()
    written = [1]

    def writer() -> None:
        seq = 1
        while not stop.is_set():
            try:
                frame = pool.acquire(timeout=0.05)
            except TimeoutError:  # every slot out: a normal wait, not an error
                continue
            seq += 1
            frame[...] = seq
            camera.publish(frame, seq)
            if seq % 10 == 0:
                camera.frame_ready.emit(frame, seq)
            written[0] = seq
            del frame

    bad: list[str] = []
    fetched: list[int] = []
    signalled: list[int] = []
    kept: list[tuple[np.ndarray, int]] = []

    def on_frame(frame: np.ndarray, seq: int) -> None:
        if kept and not _check(*kept[-1]):
            bad.append(f"signal {kept[-1][1]} changed later")
        kept.clear()
        if _check(frame, seq):
            kept.append((frame, seq))  # checked again at the next one
        else:
            bad.append(f"signal {seq}: {np.unique(frame)[:5]}")
        signalled.append(seq)

    def client(count: int) -> None:
        try:
            with CameraProxy(ctx, camera.url, timeout=20000) as proxy:
                previous: tuple[np.ndarray, int] | None = None
                for _ in range(count):
                    frame, info = proxy.grab()
                    if previous is not None and not _check(*previous):
                        bad.append(f"{previous[1]} changed after it arrived")
                    previous = None
                    if _check(frame, info["seq"]):
                        previous = (frame, info["seq"])  # checked again later
                    else:
                        bad.append(f"{info['seq']}: {np.unique(frame)[:5]}")
                    fetched.append(info["seq"])
        except Exception as exc:  # reported by the assertion below
            bad.append(repr(exc))

    listener = CameraProxy(ctx, camera.url, timeout=20000)
    try:
        listener.frame_ready.connect(on_frame)
        threads = [threading.Thread(target=writer)]
        threads += [threading.Thread(target=client, args=(60,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads[1:]:
            thread.join(60)
        assert wait_until(lambda: bool(signalled), timeout=20)
        stop.set()
        threads[0].join(20)
    finally:
        stop.set()
        listener.close()
    kept.clear()
    assert not bad, bad[:5]
    assert len(fetched) == 180
    # the slots were reused many times over while the clients fetched
    assert written[0] > 3 * pool.depth
    assert len(set(fetched)) > pool.depth


def _no_heartbeats() -> transport.SocketOptions:
    # a stalled link must stay up however long the test takes to look at it
    return dataclasses.replace(DEFAULT_OPTIONS, heartbeat_ivl_ms=0)


class StallingLink:
    """A TCP forwarder between one client and a server whose
    server-to-client direction can be stalled: what the server sends then
    waits in the server's kernel buffers and in its libzmq."""

    #: Receive buffer of the forwarder's server side (bytes; the kernel
    #: doubles it); small, so that a stalled link absorbs little.
    RCVBUF = 64 * 1024

    def __init__(self, server_port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._server_port = server_port
        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        self._cut = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stalling link")
        self._thread.start()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """Close both connections, as a client that died would."""
        self._cut.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def _run(self) -> None:
        self._listener.settimeout(0.05)
        client = None
        while client is None and not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
        if client is None:
            return
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
        upstream.connect(("127.0.0.1", self._server_port))
        try:
            while not self._stop.is_set() and not self._cut.is_set():
                readers = [client] + ([upstream] if self._flowing.is_set() else [])
                ready, _, _ = select.select(readers, [], [], 0.02)
                for sock in ready:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        finally:
            client.close()
            upstream.close()


@pytest.fixture
def stalling_link() -> Iterator[Callable[[int], StallingLink]]:
    links: list[StallingLink] = []

    def make(port: int) -> StallingLink:
        links.append(StallingLink(port))
        return links[-1]

    yield make
    for link in links:
        link.close()


def _stuck_frame_shape() -> tuple[int, int]:
    """Rows of 4 KiB, more than the kernel can hold between a server and a
    stalled link (the server's send buffer grows up to tcp_wmem's maximum),
    so the end of a reply stays in libzmq until the link moves again."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as file:
            wmem_max = int(file.read().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 << 20
    nbytes = max(8 << 20, 2 * wmem_max + 2 * StallingLink.RCVBUF + (1 << 20))
    if nbytes > 96 << 20:
        pytest.skip(f"kernel send buffers up to {wmem_max} B: too large to stall")
    return (nbytes // 4096, 1024)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class RawClient:
    """A DEALER sending native calls and reading their replies by hand,
    through a ``StallingLink``."""

    def __init__(self, ctx: zmq.Context, port: int) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def send(self, request_id: int, method: str, *args: Any) -> None:
        frames = protocol.encode_call(request_id, method, list(args), {})
        self.sock.send_multipart([b"", *frames])

    def reply(self) -> tuple[np.ndarray, dict]:
        assert self.sock.poll(30000), "no reply"
        frames = self.sock.recv_multipart(copy=False)
        reply = protocol.decode_reply(frames[1:])
        assert reply.ok, reply.error
        return reply.value, reply.info or {}

    def close(self) -> None:
        self.sock.close()


def _hold_a_reply_open(
    ctx: zmq.Context, camera: PoolCamera, link: StallingLink, method: str
) -> RawClient:
    """Ask ``method`` through ``link``, stalled; return once the server has
    handed the reply to libzmq (it has answered a later call since)."""
    client = RawClient(ctx, link.port)
    client.send(1, "ping")  # connected, handshake through
    result, _ = client.reply()
    assert result == 1
    link.stall()
    client.send(2, method, 7)
    assert camera.served.wait(20)
    # one request at a time: this answer means the reply above was sent
    with CameraProxy(ctx, camera.url, timeout=20000) as other:
        assert other.ping() == 1
    return client


def test_a_slot_stays_out_while_its_frame_is_being_sent(
    ctx, make_camera, stalling_link
):
    """Over tcp:// a client that has not read the frame yet holds its slot:
    the pool cannot hand it out (the camera cannot overwrite it); once the
    frame is through, the slot comes back and the client got it whole."""
    pool = FramePool(_stuck_frame_shape(), DTYPE, depth=1)
    camera = make_camera("tcp://127.0.0.1", pool, options=_no_heartbeats())
    link = stalling_link(_port(camera.url))
    client = _hold_a_reply_open(ctx, camera, link, "fresh")
    try:
        assert _free(pool) == 0
        with pytest.raises(TimeoutError):
            pool.acquire(timeout=0.2)
        link.resume()
        frame, info = client.reply()
        assert info["seq"] == 7 and _check(frame, 7)
        del frame
        assert wait_until(lambda: _free(pool) == 1)
    finally:
        client.close()


def test_a_client_gone_before_reading_gives_the_slot_back(
    ctx, make_camera, stalling_link
):
    pool = FramePool(_stuck_frame_shape(), DTYPE, depth=1)
    camera = make_camera("tcp://127.0.0.1", pool, options=_no_heartbeats())
    link = stalling_link(_port(camera.url))
    client = _hold_a_reply_open(ctx, camera, link, "fresh")
    try:
        assert _free(pool) == 0
        link.cut()  # the client's connection dies with the frame unread
        assert wait_until(lambda: _free(pool) == 1)
    finally:
        client.close()


def test_a_reply_in_the_backlog_keeps_its_slot_and_a_dropped_one_returns_it(
    ctx, make_camera, stalling_link
):
    """A client whose queue is full: its next replies wait in the server's
    reply backlog with their frames (slots out), a reply over the backlog's
    byte bound is dropped (its slot comes back at once, the link still
    stalled); once the client reads, every frame arrives whole."""
    shape = _stuck_frame_shape()
    nbytes = shape[0] * shape[1] * 4
    options = dataclasses.replace(
        _no_heartbeats(), hwm=1, reply_backlog_bytes=nbytes + nbytes // 2
    )
    pool = FramePool(shape, DTYPE, depth=8)
    camera = make_camera("tcp://127.0.0.1", pool, options=options)
    link = stalling_link(_port(camera.url))
    client = _hold_a_reply_open(ctx, camera, link, "fresh")
    try:
        with CameraProxy(ctx, camera.url, timeout=20000) as other:
            sent = 1
            # more requests until one reply waits in the backlog (libzmq's
            # queue of one message and its send in progress hold the others)
            while camera.stats["reply_backlog"] == 0:
                assert sent < pool.depth - 1, "no reply went to the backlog"
                sent += 1
                client.send(1 + sent, "fresh", 6 + sent)
                assert wait_until(lambda n=sent: camera.calls == n)
                assert other.ping() == 1  # that reply is handled
            assert _free(pool) == pool.depth - sent
            client.send(100, "fresh", 100)  # over the backlog's byte bound
            assert wait_until(lambda: camera.calls == sent + 1)
            assert other.ping() == 1
            assert camera.stats["dropped_replies"] == 1
            assert _free(pool) == pool.depth - sent  # the dropped one is back
        link.resume()
        for seq in range(7, 7 + sent):
            frame, info = client.reply()
            assert info["seq"] == seq and _check(frame, seq)
        del frame
        assert wait_until(lambda: _free(pool) == pool.depth)
    finally:
        client.close()


def test_a_signal_keeps_its_slot_until_the_subscriber_got_it(
    ctx, make_camera, stalling_link
):
    """An emitted pool frame is lent to the PUB socket: its slot stays out
    while a subscriber behind a stalled link has not received it."""
    pool = FramePool(_stuck_frame_shape(), DTYPE, depth=1)
    camera = make_camera("tcp://127.0.0.1", pool, options=_no_heartbeats())
    link = stalling_link(_port(camera._inventory()["signal_url"]))
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{link.port}")
        small = np.zeros(4, DTYPE)

        def subscribed() -> bool:  # no slow joiner: a small emission arrived
            camera.frame_ready.emit(small, 0)
            return bool(sub.poll(20))

        assert wait_until(subscribed)
        while sub.poll(50):
            sub.recv_multipart()
        link.stall()
        frame = pool.acquire()
        frame[...] = 9
        camera.frame_ready.emit(frame, 9)
        del frame
        assert _free(pool) == 0  # libzmq still sends it
        link.resume()
        assert sub.poll(30000)
        emission = protocol.decode_signal(sub.recv_multipart(copy=False))
        received, seq = emission.args
        assert seq == 9 and _check(received, 9)
        del received, emission
        assert wait_until(lambda: _free(pool) == 1)
    finally:
        sub.close()


def test_over_inproc_the_receiver_holds_the_slot(ctx, make_camera):
    """inproc:// passes the lent frame itself: the client's array is the
    slot's memory, so the slot is out until the client drops the array."""
    pool = FramePool(SHAPE, DTYPE, depth=1)
    camera = make_camera(f"inproc://pool-{id(pool)}", pool)
    with CameraProxy(ctx, camera.url, timeout=20000) as proxy:
        frame, info = proxy.fresh(5)
        assert _check(frame, 5)
        assert proxy.ping() == 1  # the server has finished with the call
        assert _free(pool) == 0
        result = proxy.fresh(6)  # the camera cannot get a slot
        assert not result and "TimeoutError" in result.error
        assert _check(frame, 5)
        del frame, info
        assert wait_until(lambda: _free(pool) == 1)
        frame, _ = proxy.fresh(8)
        assert _check(frame, 8)


def test_small_frames_are_copied_and_their_slot_comes_back_at_once(ctx, make_camera):
    """Under the engines' zero-copy thresholds a frame is copied when sent:
    the slot is free again while the client still holds what it received."""
    pool = FramePool((16, 16), DTYPE, depth=1)  # 1 KiB
    camera = make_camera(f"inproc://pool-{id(pool)}", pool)
    with CameraProxy(ctx, camera.url, timeout=20000) as proxy:
        frame, _ = proxy.fresh(3)
        assert wait_until(lambda: _free(pool) == 1)
        again, _ = proxy.fresh(4)  # the same slot, refilled
        assert _check(frame, 3) and _check(again, 4)


# -- today's behaviour of a plain array (why the pool exists) ---------------
def test_documents_that_a_plain_array_refilled_after_return_tears_over_tcp(
    ctx, make_camera, stalling_link
):
    """DOCUMENTS TODAY'S BEHAVIOUR, not a wish: a plain array returned from
    a buffer method is sent after the method returns, from its own memory.
    A camera that refills it while the reply is still on its way (here: a
    client that has not read it yet) changes what the client receives; the
    start of the frame had left already, the rest is the next frame."""
    pool = FramePool(_stuck_frame_shape(), DTYPE, depth=1)
    camera = make_camera("tcp://127.0.0.1", pool, options=_no_heartbeats())
    link = stalling_link(_port(camera.url))
    client = _hold_a_reply_open(ctx, camera, link, "plain")
    try:
        camera.plain_frame[...] = 8  # the camera's next frame, same array
        link.resume()
        frame, info = client.reply()
        assert info["seq"] == 7
        assert frame[0, 0] == 7 and frame[-1, -1] == 8  # torn
    finally:
        client.close()


def test_documents_that_a_plain_array_changes_under_an_inproc_client(ctx, make_camera):
    """DOCUMENTS TODAY'S BEHAVIOUR: over inproc:// the client's received
    array is the server's plain array itself, so refilling it changes a
    frame the client already holds. A pool frame cannot be refilled then
    (see test_over_inproc_the_receiver_holds_the_slot)."""
    pool = FramePool(SHAPE, DTYPE, depth=1)
    camera = make_camera(f"inproc://pool-{id(pool)}", pool)
    with CameraProxy(ctx, camera.url, timeout=20000) as proxy:
        frame, info = proxy.plain(1)
        assert info["seq"] == 1 and _check(frame, 1)
        camera.plain_frame[...] = 2
        assert _check(frame, 2)  # changed after it arrived
