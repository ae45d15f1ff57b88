"""Sequence numbers of signal emissions and property snapshots (issue 15).

Numbers and snapshots go through a real server and proxy; gaps, restarts
and hostile numbers are injected from a bare PUB socket into an
``RPCSignalReceiver``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from conftest import wait_until
from dead_peer_helpers import rebind
from signal_helpers import synced_receiver

from framerpc.client import RPCClient
from framerpc.errors import RemoteError
from framerpc.property import RPCProperty
from framerpc.protocol import SignalEmission, decode_signal, encode_signal
from framerpc.server import RPCServer
from framerpc.signal import RPCSignal
from framerpc.signal_receiver import RPCSignalReceiver
from framerpc.transport import SocketOptions

#: Ceiling of every wait: it only catches a hang.
BOUND_S = 20


class Meter:
    """A device whose ``level`` only ever grows by one per change, so that
    the values a listener sees show any change lost or repeated."""

    level_changed = RPCSignal(int)
    tick = RPCSignal(int)
    blob = RPCSignal(bytes)
    other = RPCSignal(int)
    level = RPCProperty(doc="Counts up.", notify=level_changed)
    broken = RPCProperty(doc="Its getter fails.", notify=other)
    label = RPCProperty(doc="No notify signal.")


class MeterServer(Meter, RPCServer):
    def __init__(self, ctx: zmq.Context, url: str, **kwargs: Any) -> None:
        RPCServer.__init__(self, ctx, url, **kwargs)
        self._level = 0

    def _get_level(self) -> int:
        return self._level

    def _set_level(self, value: int) -> None:
        self._level = value

    level = RPCProperty(
        _get_level, _set_level, notify=Meter.level_changed, auto_notify=True
    )

    def _get_broken(self) -> int:
        raise OSError("sensor unplugged")

    broken = RPCProperty(_get_broken, notify=Meter.other)

    def _get_label(self) -> str:
        return "meter"

    label = RPCProperty(_get_label)


@RPCClient.register_interface(Meter)
class MeterProxy(Meter, RPCClient):
    pass


@pytest.fixture
def meter(ctx, serve) -> MeterServer:
    return serve(MeterServer(ctx, "tcp://127.0.0.1"))


@pytest.fixture
def proxy(ctx, meter) -> Iterator[MeterProxy]:
    client = MeterProxy(ctx, meter.url)
    yield client
    client.close()


class Recorder:
    """Listener recording each value with the number of its emission."""

    def __init__(self, signal: RPCSignal) -> None:
        self.signal = signal
        self.seen: list[tuple[int, int | None, int | None]] = []

    def __call__(self, value: int) -> None:
        state = self.signal.sequence
        self.seen.append((value, state.last, state.epoch))


# -- numbers through a real server --------------------------------------------
def test_each_signal_numbers_its_emissions_from_one(meter, proxy):
    ticks, levels = Recorder(proxy.tick), Recorder(proxy.level_changed)
    proxy.tick.connect(ticks)
    proxy.level_changed.connect(levels)
    for value in (10, 20, 30):
        meter.tick.emit(value)
    meter.level = 1
    meter.level = 2
    assert wait_until(lambda: len(ticks.seen) == 3 and len(levels.seen) == 2, BOUND_S)
    assert [(v, q) for v, q, _ in ticks.seen] == [(10, 1), (20, 2), (30, 3)]
    assert [(v, q) for v, q, _ in levels.seen] == [(1, 1), (2, 2)]
    epochs = {ep for *_, ep in ticks.seen + levels.seen}
    assert len(epochs) == 1 and type(epochs.pop()) is int
    assert proxy.tick.gaps == 0 and proxy.level_changed.gaps == 0
    assert proxy.tick.sequence.rejected == 0


def test_an_emission_the_server_drops_is_a_gap_for_the_client(ctx, serve):
    """An emission over the per-subscriber byte bound (about 32 KiB of a
    64 KiB buffer, see server._signal_budget) is dropped: its number is
    then missing."""
    options = SocketOptions(signal_buffer_bytes=64 * 1024)
    meter = serve(MeterServer(ctx, "tcp://127.0.0.1", options=options))
    client = MeterProxy(ctx, meter.url)
    try:
        blobs = Recorder(client.blob)
        client.blob.connect(blobs)
        meter.blob.emit(b"a")
        meter.blob.emit(b"x" * 50_000)  # over the bound: dropped
        meter.blob.emit(b"c")
        assert wait_until(lambda: len(blobs.seen) == 2, BOUND_S)
        assert [(v, q) for v, q, _ in blobs.seen] == [(b"a", 1), (b"c", 3)]
        assert meter.dropped_signals == 1
        assert client.blob.gaps == 1 and client.blob.sequence.missed == 1
    finally:
        client.close()


def test_the_wire_carries_q_and_ep_only_when_numbered():
    plain = msgpack.unpackb(encode_signal(SignalEmission("s", [1]))[0])
    assert "q" not in plain and "ep" not in plain  # what older peers sent
    numbered = encode_signal(SignalEmission("s", [1], 7, 99))
    header = msgpack.unpackb(numbered[0])
    assert (header["q"], header["ep"]) == (7, 99)
    back = decode_signal(numbered)
    assert (back.name, back.args, back.seq, back.epoch) == ("s", [1], 7, 99)


def test_property_read_carries_the_notify_number(meter, proxy):
    meter.level = 5
    meter.level = 6
    from framerpc._sigseq import _read_remote

    value, info = _read_remote(proxy, "level")
    assert value == 6
    assert info == {"q": 2, "ep": meter._sequencer.epoch}
    assert proxy.level == 6  # the plain read is unchanged


# -- gaps, restarts, hostile numbers from a bare publisher -----------------------
@pytest.fixture
def pub(ctx) -> Iterator[tuple[zmq.Socket, str]]:
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close()


@pytest.fixture
def count() -> RPCSignal:
    signal = RPCSignal(int)
    signal.name = "count"
    return signal


@pytest.fixture
def receiver(ctx, pub, count) -> Iterator[RPCSignalReceiver]:
    with synced_receiver(ctx, pub, {"count": count}) as thread:
        yield thread


def _send(pub, value: int, seq: Any = None, epoch: Any = None) -> None:
    pub[0].send_multipart(encode_signal(SignalEmission("count", [value], seq, epoch)))


def _send_raw(pub, header: dict) -> None:
    pub[0].send(msgpack.packb({"v": 1, "e": "EMIT_SIGNAL", "s": "count", **header}))


def _gap_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "lost before" in r.getMessage()]


def test_a_gap_is_counted_and_logged_once_per_interval(pub, count, receiver, caplog):
    receiver._seq._gap_log.interval = 3600  # two gaps within one interval
    got: list[int] = []
    count.connect(got.append)
    with caplog.at_level(logging.WARNING, logger="framerpc._sigseq"):
        for value, seq in [(1, 1), (2, 2), (5, 5), (6, 6), (9, 9), (10, 10)]:
            _send(pub, value, seq, 77)
        assert wait_until(lambda: got and got[-1] == 10, BOUND_S)
    assert got == [1, 2, 5, 6, 9, 10]  # what arrived is emitted
    assert count.gaps == 2
    assert count.sequence.missed == 4
    assert count.sequence.last == 10
    records = _gap_records(caplog)
    assert len(records) == 1  # the second gap falls within the interval
    assert "2 emission(s) lost before number 5" in records[0].getMessage()


def test_first_number_seen_is_no_gap(pub, count, receiver):
    """A client joining late starts from whatever number comes first."""
    got: list[int] = []
    count.connect(got.append)
    _send(pub, 1, 500, 3)
    _send(pub, 2, 501, 3)
    assert wait_until(lambda: got == [1, 2], BOUND_S)
    assert count.gaps == 0 and count.sequence.last == 501


def test_a_new_epoch_is_a_restart_not_a_gap(pub, count, receiver, caplog):
    got: list[int] = []
    count.connect(got.append)
    with caplog.at_level(logging.INFO, logger="framerpc._sigseq"):
        for seq in (1, 2, 3):
            _send(pub, seq, seq, 111)
        for seq in (1, 2):
            _send(pub, 100 + seq, seq, 222)
        assert wait_until(lambda: len(got) == 5, BOUND_S)
    assert got == [1, 2, 3, 101, 102]
    assert count.sequence.restarts == 1
    assert count.gaps == 0
    assert (count.sequence.epoch, count.sequence.last) == (222, 2)
    assert any("server restarted" in r.getMessage() for r in caplog.records)


def test_emissions_without_numbers_are_accepted(pub, count, receiver):
    got: list[int] = []
    count.connect(got.append)
    for value in (4, 5):
        _send(pub, value)  # an older framerpc server
    pub[0].send(b'{"event": "EMIT_SIGNAL", "signal": "count", "args": [6]}')  # JSON
    assert wait_until(lambda: got == [4, 5, 6], BOUND_S)
    assert count.sequence.last is None
    assert count.gaps == 0 and count.sequence.rejected == 0


_HOSTILE = [
    {"q": "1", "ep": 5},
    {"q": 1.5, "ep": 5},
    {"q": True, "ep": 5},
    {"q": -1, "ep": 5},
    {"q": [1], "ep": 5},
    {"q": {"a": 1}, "ep": 5},
    {"q": 1, "ep": "x" * 10_000},
    {"q": 1},  # a number without an epoch
    {"ep": 5},
    {"q": 1, "ep": None},
    {"q": 1 << 64, "ep": 5},  # msgpack cannot pack it: replaced below
]


def test_hostile_numbers_are_dropped_and_the_receiver_goes_on(
    pub, count, receiver, caplog
):
    receiver._seq._bad_log.interval = 3600
    got: list[int] = []
    count.connect(got.append)
    with caplog.at_level(logging.WARNING, logger="framerpc._sigseq"):
        _send(pub, 1, 1, 5)
        sent = 0
        for header in _HOSTILE:
            if header.get("q") == 1 << 64:
                continue
            _send_raw(pub, {"x": [666], **header})
            sent += 1
        _send(pub, 2, 2, 5)
        _send(pub, 666, 2, 5)  # a repeated number
        _send(pub, 666, 1, 5)  # an older one
        _send(pub, 3, 3, 5)
        assert wait_until(lambda: got and got[-1] == 3, BOUND_S)
    assert got == [1, 2, 3]
    assert count.sequence.rejected == sent + 2
    assert count.gaps == 0
    assert receiver.is_alive()
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1  # rate-limited (interval set long): not one each
    assert all(len(r.getMessage()) < 400 for r in dropped)  # hostile text cut


def test_a_bogus_jump_ahead_does_not_silence_the_signal(pub, count, receiver):
    """One emission numbered far ahead, then the real numbers again: after
    RESYNC_AFTER of them in a row the receiver takes them as they come."""
    from framerpc._sigseq import RESYNC_AFTER

    got: list[int] = []
    count.connect(got.append)
    _send(pub, 1, 1, 5)
    _send(pub, 666, (1 << 64) - 1, 5)  # bogus, far ahead: taken (a gap)
    real = list(range(2, 2 + RESYNC_AFTER + 3))
    for seq in real:
        _send(pub, seq, seq, 5)
    assert wait_until(lambda: got and got[-1] == real[-1], BOUND_S)
    kept = real[RESYNC_AFTER - 1 :]  # the first RESYNC_AFTER - 1 are dropped
    assert got == [1, 666, *kept]
    assert count.sequence.rejected == RESYNC_AFTER - 1
    assert count.sequence.last == real[-1]


def test_a_flood_of_epochs_is_counted_but_logged_boundedly(
    pub, count, receiver, caplog
):
    receiver._seq._restart_log.interval = 3600
    got: list[int] = []
    count.connect(got.append)
    with caplog.at_level(logging.INFO, logger="framerpc._sigseq"):
        for epoch in range(1, 201):
            _send(pub, epoch, 1, epoch)
        assert wait_until(lambda: len(got) == 200, BOUND_S)
    assert count.sequence.restarts == 199 and count.gaps == 0
    restarts = [r for r in caplog.records if "restarted" in r.getMessage()]
    assert len(restarts) == 1  # rate-limited (interval set long), not 199


# -- server restart through a real proxy ---------------------------------------
def test_a_server_restart_restarts_the_numbers_visibly(ctx):
    first = MeterServer(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=first.serve_forever, daemon=True)
    thread.start()
    proxy = MeterProxy(ctx, first.url, timeout=500)
    second = None
    try:
        ticks = Recorder(proxy.tick)
        proxy.tick.connect(ticks)
        for value in range(1, 6):
            first.tick.emit(value)
        assert wait_until(lambda: len(ticks.seen) == 5, BOUND_S)
        old_epoch = ticks.seen[-1][2]
        first.stop_server()
        thread.join(timeout=BOUND_S)
        second = rebind(lambda: MeterServer(ctx, first.url), BOUND_S)
        thread = threading.Thread(target=second.serve_forever, daemon=True)
        thread.start()

        def delivered() -> bool:
            second.tick.emit(1000)
            return bool(ticks.seen) and ticks.seen[-1][2] != old_epoch

        assert wait_until(delivered, BOUND_S)
        assert ticks.seen[-1][0] == 1000
        assert proxy.tick.sequence.restarts == 1
        assert proxy.tick.gaps == 0  # the restart is not a gap
        assert proxy.tick.sequence.epoch == second._sequencer.epoch
        assert proxy.tick.sequence.last == ticks.seen[-1][1]
    finally:
        proxy.close()
        for server in (first, second):
            if server is not None:
                server.stop_server()
        thread.join(timeout=BOUND_S)


# -- snapshots -----------------------------------------------------------------
def test_snapshot_then_every_change_once_under_concurrent_sets(meter, proxy):
    """A thread sets ``level`` 1, 2, 3... while a listener connects with a
    snapshot: it must see the value then each later one exactly once."""
    # A plain listener paces the setter, so that no emission is dropped for
    # a full queue (that would be a gap, not what this test is about).
    latest = [0]
    proxy.level_changed.connect(lambda value: latest.__setitem__(0, value))
    stop = threading.Event()
    failure: list[BaseException] = []

    def setter() -> None:
        try:
            value = 0
            while not stop.is_set():
                if value - latest[0] > 50:
                    time.sleep(0.0005)
                    continue
                value += 1
                meter.level = value
        except BaseException as exc:  # reported by the test
            failure.append(exc)

    worker = threading.Thread(target=setter)
    worker.start()
    got: list[int] = []
    try:
        assert wait_until(lambda: meter.level >= 20, BOUND_S)
        proxy.level_changed.connect(got.append, snapshot=True)
        first = got[0]
        # changes went on during and after the connect
        assert wait_until(lambda: len(got) > 200, BOUND_S)
    finally:
        stop.set()
        worker.join(timeout=BOUND_S)
    assert not failure
    final = meter.level
    assert wait_until(lambda: got[-1] == final, BOUND_S)
    assert proxy.level_changed.gaps == 0
    assert first >= 20
    assert got == list(range(first, final + 1))  # none lost, none doubled


def test_snapshot_with_sets_from_another_client(ctx, meter, proxy):
    setter_proxy = MeterProxy(ctx, meter.url)
    stop = threading.Event()
    latest = [0]
    proxy.level_changed.connect(lambda value: latest.__setitem__(0, value))

    def setter() -> None:
        value = 0
        while not stop.is_set() and value < 100_000:
            if value - latest[0] > 50:
                time.sleep(0.0005)
                continue
            value += 1
            setter_proxy.level = value

    worker = threading.Thread(target=setter)
    worker.start()
    got: list[int] = []
    try:
        assert wait_until(lambda: meter.level >= 5, BOUND_S)
        proxy.level_changed.connect(got.append, snapshot=True)
        assert wait_until(lambda: len(got) > 50, BOUND_S)
    finally:
        stop.set()
        worker.join(timeout=BOUND_S)
        setter_proxy.close()
    final = meter.level
    assert wait_until(lambda: got[-1] == final, BOUND_S)
    assert got == list(range(got[0], final + 1))


class PausingMeter(MeterServer):
    """``level``'s setter stores the value, then waits for ``go`` before the
    notify signal is emitted: a read in between sees the new value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored = threading.Event()
        self.go = threading.Event()
        self.read_asked = threading.Event()

    def _set_level(self, value: int) -> None:
        self._level = value
        self.stored.set()
        assert self.go.wait(BOUND_S)

    level = RPCProperty(
        MeterServer._get_level, _set_level, notify=Meter.level_changed, auto_notify=True
    )

    def _execute(self, request: Any) -> Any:
        if request.name == "level":
            self.read_asked.set()
        return super()._execute(request)


def test_a_read_between_set_and_emit_waits_for_the_emit(ctx, serve):
    """Without the lock across set and emit, the snapshot would read the new
    value under the old number, and the emission would repeat it."""
    meter = serve(PausingMeter(ctx, "tcp://127.0.0.1"))
    client = MeterProxy(ctx, meter.url)
    setter = threading.Thread(target=setattr, args=(meter, "level", 1))
    got: list[int] = []
    snapper = threading.Thread(
        target=client.level_changed.connect,
        args=(got.append,),
        kwargs={"snapshot": True},
    )
    try:
        setter.start()
        assert meter.stored.wait(BOUND_S)
        snapper.start()
        assert meter.read_asked.wait(BOUND_S)
        time.sleep(0.2)  # lets a lock-free read happen (only sharpens the test)
        meter.go.set()
        setter.join(BOUND_S)
        snapper.join(BOUND_S)
        assert not snapper.is_alive()
        meter.level = 2  # sentinel, published after
        assert wait_until(lambda: got and got[-1] == 2, BOUND_S)
        assert got == [1, 2]
    finally:
        meter.go.set()
        setter.join(BOUND_S)
        snapper.join(BOUND_S)
        client.close()


def test_snapshot_of_a_quiet_property_delivers_the_value_once(meter, proxy):
    meter.level = 41
    got: list[int] = []
    proxy.level_changed.connect(got.append, snapshot=True)
    assert got == [41]  # delivered before connect returns
    meter.level = 42
    assert wait_until(lambda: got == [41, 42], BOUND_S)
    proxy.level_changed.disconnect(got.append)  # the callback, as given
    ticks: list[int] = []
    proxy.tick.connect(ticks.append)
    meter.level = 43
    meter.tick.emit(2)  # sentinel: published after, received after
    assert wait_until(lambda: 2 in ticks, BOUND_S)
    assert got == [41, 42]


def test_snapshot_needs_a_notify_signal_of_a_remote_property(meter, proxy):
    with pytest.raises(TypeError, match="not the notify signal"):
        proxy.tick.connect(print, snapshot=True)
    local = RPCSignal(int)
    with pytest.raises(TypeError, match="not the notify signal"):
        local.connect(print, snapshot=True)
    assert proxy.tick.connections == [] and local.connections == []


def test_snapshot_of_a_connected_callback_or_a_weak_reference(meter, proxy):
    import weakref

    got: list[int] = []
    proxy.level_changed.connect(got.append, snapshot=True)
    proxy.level_changed.connect(got.append, snapshot=True)  # nothing, as connect
    assert got == [0] and len(proxy.level_changed.connections) == 1

    class Sink:
        def take(self, value: int) -> None:
            pass

    sink = Sink()
    with pytest.raises(TypeError, match="weak reference"):
        proxy.level_changed.connect(weakref.WeakMethod(sink.take), snapshot=True)
    assert len(proxy.level_changed.connections) == 1


def test_snapshot_whose_read_fails_raises_and_leaves_nothing_connected(meter, proxy):
    with pytest.raises(RemoteError, match="sensor unplugged"):
        proxy.other.connect(print, snapshot=True)
    assert proxy.other.connections == []


# -- framerpc.aio: numbers and gaps (no snapshot= there) -------------------------
def test_aio_signals_check_numbers_too(ctx, meter):
    import asyncio

    import framerpc.aio

    async def main() -> None:
        async with framerpc.aio.connect(Meter, meter.url, context=ctx) as cam:
            ticks = cam.tick.subscribe()
            for value in (1, 2, 3):
                meter.tick.emit(value)
            for value in (1, 2, 3):
                assert await asyncio.wait_for(ticks.__anext__(), BOUND_S) == (value,)
            state = cam.tick.sequence
            assert (state.last, state.epoch) == (3, meter._sequencer.epoch)
            # an emission numbered past a lost one, then a repeated number
            hub = cam.tick._hub
            hub._dispatch(SignalEmission("tick", [10], 6, state.epoch))
            hub._dispatch(SignalEmission("tick", [11], 6, state.epoch))
            hub._dispatch(SignalEmission("tick", [12], "7", state.epoch))
            for value in (4, 5, 6, 7):  # numbered 4 to 7: only 7 is after 6
                meter.tick.emit(value)
            assert await asyncio.wait_for(ticks.__anext__(), BOUND_S) == (10,)
            assert await asyncio.wait_for(ticks.__anext__(), BOUND_S) == (7,)
            assert cam.tick.gaps == 1 and state.missed == 2
            assert state.rejected == 5  # 11, "7", then 4, 5 and 6
            ticks.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_aio_follow_gives_the_value_then_every_change_once(ctx, meter):
    """framerpc.aio's twin of snapshot=True: ``await proxy.level.follow(f)``
    while a device thread keeps setting the property."""
    import asyncio

    import framerpc.aio

    got: list[int] = []
    latest = [0]
    stop = threading.Event()

    def setter() -> None:
        value = 0
        while not stop.is_set() and value < 100_000:
            if value - latest[0] > 50:  # paced by what the proxy received
                time.sleep(0.0005)
                continue
            value += 1
            meter.level = value

    async def main() -> None:
        async with framerpc.aio.connect(Meter, meter.url, context=ctx) as cam:
            cam.level_changed.connect(lambda v: latest.__setitem__(0, v))
            worker = threading.Thread(target=setter)
            worker.start()
            try:
                while meter.level < 20:
                    await asyncio.sleep(0.01)
                await cam.level.follow(got.append)
                assert got  # the value's call is done on return
                while len(got) < 200:
                    await asyncio.sleep(0.01)
            finally:
                stop.set()
                await asyncio.to_thread(worker.join, BOUND_S)
            final = meter.level
            while got[-1] != final:
                await asyncio.sleep(0.01)
            assert cam.level_changed.gaps == 0
            cam.level_changed.disconnect(got.append)
            meter.level = final + 1
            ticks = cam.tick.subscribe()
            meter.tick.emit(1)  # sentinel, published after
            assert await asyncio.wait_for(ticks.__anext__(), BOUND_S) == (1,)
            ticks.close()
            with pytest.raises(TypeError, match="no notify signal"):
                await cam.label.follow(print)
            with pytest.raises(RemoteError, match="sensor unplugged"):
                await cam.broken.follow(print)

    asyncio.run(asyncio.wait_for(main(), 60))
    assert got[0] >= 20
    assert got == list(range(got[0], got[-1] + 1))  # none lost, none doubled
