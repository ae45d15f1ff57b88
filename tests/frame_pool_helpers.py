"""Helpers shared by tests/test_frame_pool*.py: frame checks, the never-torn
harness (also used by tests/test_shm_frames.py) and a camera serving pool
frames.
"""

from __future__ import annotations

import dataclasses
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from framerpc import FramePool, RPCClient, RPCServer, RPCSignal, protocol, transport
from framerpc.transport import DEFAULT_OPTIONS

# 256 KiB frames: over both engines' zero-copy thresholds (16 KiB compiled,
# 64 KiB pure), so they are lent to libzmq, not copied.
SHAPE = (64, 1024)
DTYPE = np.uint32


def _check(frame: np.ndarray, seq: int) -> bool:
    return bool(np.all(frame == seq))


class Rechecked:
    """Checks each frame received against its sequence number, and the one
    before again: a frame must not change after it arrived (a slot refilled
    under it). Problems go to ``bad``, prefixed with ``label``."""

    def __init__(self, bad: list[str], label: str = "") -> None:
        self.bad = bad
        self.label = label
        self.previous: tuple[np.ndarray, int] | None = None

    def check(self, frame: np.ndarray, seq: int) -> None:
        if self.previous is not None and not _check(*self.previous):
            self.bad.append(f"{self.label}{self.previous[1]} changed after it arrived")
        self.previous = None
        if _check(frame, seq):
            self.previous = (frame, seq)  # checked again at the next one
        else:
            self.bad.append(f"{self.label}{seq}: {np.unique(frame)[:5]}")

    def clear(self) -> None:
        """Let go of the frame held for the next check (and its slot)."""
        self.previous = None


@dataclasses.dataclass
class NeverTorn:
    """What ``fetch_while_refilling`` saw: problems, the sequence numbers
    fetched, and how many frames the writer wrote."""

    bad: list[str]
    fetched: list[int]
    written: int


def fetch_while_refilling(
    pool: FramePool,
    publish: Callable[[np.ndarray, int], None],
    connect: Callable[[], Any],
    method: str,
    *,
    clients: int = 3,
    count: int = 60,
    wrap: int | None = None,
    on_written: Callable[[np.ndarray, int], None] | None = None,
    on_frame: Callable[[np.ndarray], str | None] | None = None,
    while_writing: Callable[[], None] | None = None,
    min_distinct: int = 0,
) -> NeverTorn:
    """The never-torn harness: a writer refills ``pool`` as fast as it can,
    each frame filled with its sequence number and handed to ``publish``,
    while ``clients`` threads each fetch ``count`` frames with
    ``connect().<method>()`` (``(frame, {"seq": ...})``), every one checked
    and checked again one fetch later (``Rechecked``).

    Parameters
    ----------
    wrap : int, optional
        Sequence numbers wrap at this (what the dtype holds).
    on_written : callable, optional
        ``(frame, seq)`` after each frame published, in the writer thread.
    on_frame : callable, optional
        The per-frame hook: ``(frame) -> problem or None`` for each frame
        a client fetched (e.g. where its memory lies).
    while_writing : callable, optional
        Called once the clients are done, the writer still running.
    min_distinct : int
        Clients go on fetching after ``count`` (up to 50 times as many)
        until more than this many different frames were fetched: on a
        loaded machine the writer may be scheduled so rarely that ``count``
        fetches see only a few frames, which would test no refill.
    """
    first = pool.acquire()
    first[...] = 1
    publish(first, 1)
    del first
    stop = threading.Event()
    written = [1]
    bad: list[str] = []
    fetched: list[int] = []
    distinct: set[int] = set()

    def writer() -> None:
        seq = 1
        while not stop.is_set():
            try:
                frame = pool.acquire(timeout=0.05)
            except TimeoutError:  # every slot out: a normal wait, not an error
                continue
            seq = seq + 1 if wrap is None else (seq + 1) % wrap
            frame[...] = seq
            publish(frame, seq)
            if on_written is not None:
                on_written(frame, seq)
            written[0] += 1
            del frame

    def client() -> None:
        try:
            with connect() as proxy:
                checked = Rechecked(bad)
                for done in range(50 * count):
                    if done >= count and len(distinct) > min_distinct:
                        break
                    frame, info = getattr(proxy, method)()
                    problem = on_frame(frame) if on_frame is not None else None
                    if problem is not None:
                        bad.append(problem)
                    checked.check(frame, info["seq"])
                    fetched.append(info["seq"])
                    distinct.add(info["seq"])
                    del frame
                checked.clear()
        except Exception as exc:  # reported by the caller's assertion
            bad.append(repr(exc))

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=client) for _ in range(clients)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads[1:]:
            thread.join(60)
        if while_writing is not None:
            while_writing()
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
    return NeverTorn(bad, fetched, written[0])


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


# -- fixtures shared by the test files of this subject (tests/conftest.py
# loads this module as a plugin) ---------------------------------------


@pytest.fixture
def make_camera(ctx: zmq.Context, serve: Callable) -> Callable[..., PoolCamera]:
    def make(url: str, pool: FramePool, **kw: Any) -> PoolCamera:
        return serve(PoolCamera(ctx, url, pool, **kw))

    return make


@pytest.fixture
def stalling_link() -> Iterator[Callable[[int], StallingLink]]:
    links: list[StallingLink] = []

    def make(port: int) -> StallingLink:
        links.append(StallingLink(port))
        return links[-1]

    yield make
    for link in links:
        link.close()
