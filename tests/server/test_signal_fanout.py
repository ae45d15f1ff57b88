"""The per-subscriber signal fanout (framerpc.server.fanout, issue 11):
departures free a subscriber's bytes and record, what peers send on the
signal socket is read and bounded, JSON subscribers get the same bound
and still decode, and drops are logged at most once a second."""

from __future__ import annotations

import json
import logging

import zmq
from conftest import wait_until
from fanout_helpers import subscribe as _sub

from framerpc import protocol
from framerpc.server import RPCServer
from framerpc.server import fanout as fanout_module
from framerpc.signal import RPCSignal
from framerpc.transport import SocketOptions

PAYLOAD = 100_000
SENTINEL = b"end"


class Publisher(RPCServer):
    data = RPCSignal(bytes)
    text = RPCSignal(str)


def _records(server: Publisher, json_socket: bool = False) -> list:
    fan = server._legacy_signal_fanout if json_socket else server._signal_fanout
    with server._signal_lock:
        fan.read_input()
        return list(fan)


def _reaches(server: Publisher, sock: zmq.Socket, emit=None) -> None:
    """Emit small signals until ``sock`` got one; read what it queued."""

    def attempt() -> bool:
        (emit or (lambda: server.data.emit(b"sync")))()
        return bool(sock.poll(20))

    assert wait_until(attempt, timeout=20)
    while sock.poll(50):
        sock.recv_multipart()


def _until_sentinel(sock: zmq.Socket, server: Publisher) -> list:
    """Native payloads received up to SENTINEL (emitted after them)."""
    server.data.emit(SENTINEL)
    got = []
    while True:
        assert sock.poll(20_000), "the sentinel never came"
        payload = bytes(protocol.decode_signal(sock.recv_multipart()).args[0])
        if payload == SENTINEL:
            return got
        if payload != b"sync":  # a late one of _reaches
            got.append(payload)


def test_departure_frees_bytes_and_record(ctx, socks):
    server = Publisher(ctx, "tcp://127.0.0.1")
    try:
        url = server._inventory()["signal_url"]
        stalled = _sub(ctx, socks, url, stalled=True)
        _reaches(server, stalled)
        for _ in range(300):  # 30 MB its queue keeps (under the bound)
            server.data.emit(b"d" * PAYLOAD)
        (gone,) = _records(server)
        assert server.stats["signal_bytes_in_flight"] > 0
        stalled.close(linger=0)
        socks.remove(stalled)
        # libzmq frees its queue when the connection ends: every tracker
        # comes back (the untracked tail is counted until it is forgotten)
        assert gone.pending

        def freed() -> bool:  # stats reads the socket: libzmq acts then
            assert server.stats is not None
            with server._signal_lock:
                return gone.release() == gone.tail

        assert wait_until(freed)
        # its record is found and forgotten when the next subscriber comes
        reader = _sub(ctx, socks, url)
        _reaches(server, reader)
        (record,) = _records(server)
        assert record.ident != gone.ident
        assert server.stats["signal_bytes_in_flight"] == 0
        server.data.emit(b"r" * PAYLOAD)
        assert [len(p) for p in _until_sentinel(reader, server)] == [PAYLOAD]
    finally:
        server.stop_server()


def test_cancelled_subscription_frees_the_record(ctx, socks):
    server = Publisher(ctx, "tcp://127.0.0.1")
    try:
        url = server._inventory()["signal_url"]
        quitter = _sub(ctx, socks, url)
        reader = _sub(ctx, socks, url)
        _reaches(server, quitter)
        _reaches(server, reader)
        assert len(_records(server)) == 2
        quitter.setsockopt(zmq.UNSUBSCRIBE, b"")
        assert wait_until(lambda: len(_records(server)) == 1)
        server.data.emit(b"after")
        assert _until_sentinel(reader, server) == [b"after"]
    finally:
        server.stop_server()


def test_junk_and_repeated_subscriptions_do_not_grow_the_server(ctx, socks):
    """A raw peer floods the signal socket: messages that are not
    subscriptions are read and counted, a second b"" from one connection
    gets no second prefix, a message over MAX_INPUT ends the connection."""
    server = Publisher(ctx, "tcp://127.0.0.1")
    try:
        url = server._inventory()["signal_url"]
        reader = _sub(ctx, socks, url)
        _reaches(server, reader)
        raw = _sub(ctx, socks, url, kind=zmq.XSUB)
        raw.send(b"\x01")  # a subscription to everything
        assert wait_until(lambda: len(_records(server)) == 2)
        fan = server._signal_fanout
        sent = 0
        for _ in range(10):  # batches within the XSUB's own queue (1000)
            for index in range(500):
                raw.send(b"j" * 200 if index % 2 else b"\x01")
            sent += 500

            def all_read(sent=sent) -> bool:
                _records(server)
                return fan.ignored == sent

            assert wait_until(all_read), (fan.ignored, sent)
        assert len(_records(server)) == 2  # one prefix per connection
        with server._signal_lock:
            assert not fan.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN
        # over MAX_INPUT: libzmq drops the connection, the bytes never pile up
        monitor = raw.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            raw.send(b"j" * (fanout_module.MAX_INPUT + 1))
            assert monitor.poll(20_000)
        finally:
            raw.disable_monitor()
            monitor.close(linger=0)
        server.data.emit(b"still")
        assert _until_sentinel(reader, server) == [b"still"]
        assert server.stats["dropped_signals"] == 0
    finally:
        server.stop_server()


def _json_sub(ctx, socks, server: Publisher, stalled: bool) -> zmq.Socket:
    port = server._start_legacy_signals()
    return _sub(ctx, socks, f"tcp://127.0.0.1:{port}", stalled=stalled)


def test_json_subscribers_decode_and_are_bounded(ctx, socks):
    bound = 2 << 20
    server = Publisher(
        ctx, "tcp://127.0.0.1", options=SocketOptions(signal_buffer_bytes=bound)
    )
    try:
        stalled = _json_sub(ctx, socks, server, stalled=True)
        reader = _json_sub(ctx, socks, server, stalled=False)
        for sock in (stalled, reader):
            _reaches(server, sock, lambda: server.text.emit("sync"))
        records = _records(server, json_socket=True)
        assert len(records) == 2
        count = 100  # 10 MB of JSON, 5 times the bound
        got = []
        for index in range(count):
            server.text.emit(f"{index:08d}" + "t" * (PAYLOAD - 8))
            message = {"args": ["sync"]}
            while message["args"] == ["sync"]:  # a late one of _reaches
                assert reader.poll(20_000)  # a reader that keeps up
                message = json.loads(reader.recv())
            got.append(message)
            assert max(r.held for r in records) <= bound
            if index % 5 == 4:  # released, as pyzmq's collector sees it
                assert wait_until(
                    lambda: min(r.release() - r.tail for r in records) == 0
                )
        numbers = [int(m["args"][0][:8]) for m in got]
        assert numbers == list(range(count))
        assert all(m["signal"] == "text" for m in got)
        stats = server.stats
        assert stats["dropped_signals_for_all"] == 0
        assert sorted(r.dropped for r in records)[0] == 0
        assert stats["dropped_signals_for_some"] == max(r.dropped for r in records) > 0
    finally:
        server.stop_server()


def test_drops_are_logged_at_most_once_a_second(ctx, socks, caplog):
    bound = 1 << 20
    server = Publisher(
        ctx, "tcp://127.0.0.1", options=SocketOptions(signal_buffer_bytes=bound)
    )
    caplog.set_level(logging.INFO, logger="framerpc.server")
    try:
        url = server._inventory()["signal_url"]
        stalled = _sub(ctx, socks, url, stalled=True)
        _reaches(server, stalled)
        caplog.clear()
        for _ in range(100):  # 10 MB to a subscriber bound to 1 MB
            server.data.emit(b"l" * PAYLOAD)
        dropped = server.stats["dropped_signals_for_some"]
        assert dropped > 50
        records = [r for r in caplog.records if "does not read" in r.getMessage()]
        assert 1 <= len(records) < dropped
        # a subscriber's own stall is no server warning (it is counted)
        assert all(r.levelno == logging.INFO for r in records)
    finally:
        server.stop_server()


def test_prefixes_are_fixed_length_and_distinct():
    natives = {fanout_module.native_prefix(i) for i in (1, 2, 255, 256, 2**32 - 1)}
    assert {len(p) for p in natives} == {9} and len(natives) == 5
    spaces = {fanout_module.json_prefix(i) for i in range(1, 300)}
    assert {len(p) for p in spaces} == {12} and len(spaces) == 299
    assert all(not p.strip(b" \t\n\r") for p in spaces)
    assert json.loads(fanout_module.json_prefix(77) + b'{"a": 1}') == {"a": 1}


def test_an_idle_server_frees_what_a_departed_subscriber_held(ctx, socks, serve):
    """No emission and no ``stats`` after the departure: the serve loop
    reads the signal socket when idle, and libzmq frees the queue then."""
    server = serve(Publisher(ctx, "tcp://127.0.0.1"))
    url = server._inventory()["signal_url"]
    stalled = _sub(ctx, socks, url, stalled=True)
    _reaches(server, stalled)
    for _ in range(300):  # 30 MB its queue keeps (under the bound)
        server.data.emit(b"i" * PAYLOAD)
    (gone,) = _records(server)
    stalled.close(linger=0)
    socks.remove(stalled)

    def freed() -> bool:  # no stats(): that would read the socket itself
        with server._signal_lock:
            return gone.release() == gone.tail

    assert wait_until(freed)


def test_proxies_keep_receiving_beside_a_stalled_subscriber(ctx, socks, serve, connect):
    """A sync proxy and an asyncio proxy get every emission (100 KB
    strings, in the header) while a stalled subscriber is held to a
    2 MiB bound."""
    import asyncio

    from devices import Camera, CameraServer

    import framerpc.aio

    bound = 2 << 20
    server = serve(
        CameraServer(
            ctx, "tcp://127.0.0.1", options=SocketOptions(signal_buffer_bytes=bound)
        )
    )
    stalled = _sub(ctx, socks, server._inventory()["signal_url"], stalled=True)
    proxy = connect(server.url)
    got: list[str] = []
    proxy.mode_changed.connect(got.append)
    texts = [f"{index:04d}" + "m" * (PAYLOAD - 4) for index in range(60)]

    async def main() -> list[str]:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            changes = cam.mode_changed.subscribe()
            # the stalled one, the proxy's and the asyncio client's
            assert wait_until(lambda: len(_records(server)) == 3)
            _reaches(server, stalled, lambda: server.frame_ready.emit(0))
            ids = {proxy._signal_receiver.subscriber, cam.signal_hub.subscriber}
            readers = [r for r in _records(server) if r.ident in ids]
            assert len(readers) == 2

            def released() -> bool:
                # pyzmq's collector thread marks what libzmq released; on a
                # loaded machine it can lag by 2 MiB, and a reader that
                # keeps up would then look slow (the full suite at load 10)
                with server._signal_lock:
                    return all(r.release() - r.tail == 0 for r in readers)

            seen = []
            for index, text in enumerate(texts):
                server.mode_changed.emit(text)
                (value,) = await asyncio.wait_for(changes.__anext__(), 20)
                seen.append(value)
                assert wait_until(lambda n=index + 1: len(got) == n)
                assert wait_until(released)
            return seen

    assert asyncio.run(main()) == texts
    assert got == texts
    stats = server.stats
    assert stats["dropped_signals_for_all"] == 0
    assert stats["dropped_signals_for_some"] > 0  # the stalled one's
    assert 0 < stats["signal_bytes_in_flight"] <= 2 * bound
