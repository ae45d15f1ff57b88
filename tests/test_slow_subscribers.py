"""A subscriber that never reads holds a bounded number of bytes in the
server, the other subscribers keep receiving, and dropped emissions are
counted (issue 11)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import zmq
from conftest import wait_until

from framerpc import protocol
from framerpc.server import RPCServer
from framerpc.signal import RPCSignal
from framerpc.transport import DEFAULT_OPTIONS, SocketOptions

PAYLOAD = 100_000  # bytes per emission, as in the issue
SENTINEL = b"end"


class Publisher(RPCServer):
    data = RPCSignal(bytes)


@pytest.fixture
def subscribers(ctx: zmq.Context) -> Iterator[list[zmq.Socket]]:
    made: list[zmq.Socket] = []
    yield made
    for sock in made:
        sock.close(linger=0)


def _subscribe(ctx, made, url: str, stalled: bool) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    made.append(sock)
    if stalled:  # takes almost nothing off the server's queue
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    return sock


def _payload_of(sock: zmq.Socket) -> bytes:
    emission = protocol.decode_signal(sock.recv_multipart(copy=False))
    return bytes(emission.args[0])


def _sync(server: Publisher, subs: list[zmq.Socket]) -> None:
    """Emit small signals until every subscriber got one (no slow joiner);
    read everything they queued, then the stalled one stops reading."""
    for sock in subs:
        assert wait_until(lambda s=sock: _emit_and_poll(server, s), timeout=10)
    for sock in subs:
        while sock.poll(50):
            sock.recv_multipart()


def _emit_and_poll(server: Publisher, sock: zmq.Socket) -> bool:
    server.data.emit(b"sync")
    return bool(sock.poll(20))


def _drain(sock: zmq.Socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(_payload_of_nowait(sock))
        except zmq.Again:
            return got


def _payload_of_nowait(sock: zmq.Socket) -> bytes:
    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
    return bytes(protocol.decode_signal(frames).args[0])


def _run(ctx, subscribers, options: SocketOptions, count: int):
    server = Publisher(ctx, "tcp://127.0.0.1", options=options)
    try:
        url = server._inventory()["signal_url"]
        stalled = _subscribe(ctx, subscribers, url, stalled=True)
        fast = _subscribe(ctx, subscribers, url, stalled=False)
        _sync(server, [stalled, fast])
        payload = b"x" * PAYLOAD
        received = 0
        peak = 0
        for index in range(count):
            server.data.emit(payload)
            if index % 20 == 19:
                received += len(_drain(fast))
                peak = max(peak, server.stats["signal_bytes_in_flight"])
        server.data.emit(SENTINEL)  # small: never dropped by the budget
        tail: list[bytes] = []
        assert wait_until(
            lambda: bool(tail.extend(_drain(fast))) or SENTINEL in tail, timeout=20
        )
        received += len([p for p in tail if p != SENTINEL])
        return server.stats, received, peak
    finally:
        server.stop_server()


def test_stalled_subscriber_holds_at_most_the_signal_buffer(ctx, subscribers):
    count = 1500  # 150 MB: a stalled subscriber would hold it all before
    stats, received, peak = _run(ctx, subscribers, DEFAULT_OPTIONS, count)
    bound = DEFAULT_OPTIONS.signal_buffer_bytes
    assert 0 < peak <= bound
    # the stalled subscriber holds about signal_hwm emissions: the budget
    # leaves room for the fast one, which got every emission not counted
    assert received + stats["dropped_signals"] == count
    assert received >= count // 2


def test_emissions_over_the_buffer_are_dropped_and_counted(ctx, subscribers, caplog):
    budget = 8 << 20  # the stalled subscriber alone could hold 10 MB
    options = SocketOptions(signal_buffer_bytes=budget, signal_hwm=100)
    count = 400
    caplog.set_level(logging.WARNING, logger="framerpc.server")
    started = time.monotonic()
    stats, received, peak = _run(ctx, subscribers, options, count)
    elapsed = time.monotonic() - started
    assert peak <= budget
    assert stats["dropped_signals"] > 0
    assert received + stats["dropped_signals"] == count
    # logged at most once a second, however many were dropped
    warnings = [r for r in caplog.records if "emissions dropped" in r.getMessage()]
    assert 1 <= len(warnings) <= elapsed + 1


def test_emission_larger_than_the_buffer_is_dropped(ctx, subscribers):
    options = SocketOptions(signal_buffer_bytes=1 << 20)
    server = Publisher(ctx, "inproc://too-large", options=options)
    try:
        sub = _subscribe(ctx, subscribers, server._inventory()["signal_url"], False)
        _sync(server, [sub])
        half = b"h" * (512 << 10)  # fits: small frames take at most 1/4
        server.data.emit(half)
        server.data.emit(b"y" * (2 << 20))
        server.data.emit(SENTINEL)
        assert sub.poll(10_000)
        assert _payload_of(sub) == half
        assert sub.poll(10_000)
        assert _payload_of(sub) == SENTINEL
        assert server.dropped_signals == 1
    finally:
        server.stop_server()
