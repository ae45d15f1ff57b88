"""A subscriber that reads every emission is not judged slow when pyzmq's
garbage-collector thread lags (framerpc.server.fanout_subscriber.Fence).

libzmq's release of a lent frame reaches its ``MessageTracker`` only once
that Python thread has run, which under a busy GIL may take a while: the
fan-out then counted a reader that kept up as holding what it had read,
and dropped its emissions. The lag is modelled here without timing: the
thread handles no release until some thread waits on a tracker, as if it
got the GIL only when the publisher blocks for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq
from conftest import wait_until
from fanout_helpers import subscribe
from zmq.utils import garbage

from framerpc import protocol
from framerpc.server import fanout as fanout_module

LIMIT = 256 << 10  # bytes a subscriber may hold: three emissions
PAYLOAD = 64 << 10  # one frame of its own, lent and tracked
COUNT = 16


class _LaggingRefs(dict):
    """pyzmq's table of lent objects, from which its thread pops (then sets
    the tracker's event) only while ``gate`` is open."""

    def __init__(self, refs: dict, gate: threading.Event) -> None:
        super().__init__(refs)
        self.gate = gate

    def pop(self, *args):
        self.gate.wait()
        return super().pop(*args)


@pytest.fixture
def lagging_gc(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """pyzmq's garbage-collector thread handles releases only while a
    thread waits on a tracker; yields the count of such waits."""
    gate, waits = threading.Event(), [0]
    zmq.Frame(b"start", copy=False)  # the thread runs (store starts it)
    gc = garbage.gc
    gc.refs = _LaggingRefs(gc.refs, gate)
    real_wait = zmq.MessageTracker.wait

    def wait(tracker: zmq.MessageTracker, timeout: float = -1) -> None:
        waits[0] += 1
        gate.set()
        try:
            real_wait(tracker, timeout)
        finally:
            gate.clear()

    monkeypatch.setattr(zmq.MessageTracker, "wait", wait)
    try:
        yield waits
    finally:
        # open for good, and the table stays: putting the old one back could
        # lose an object libzmq still uses
        monkeypatch.undo()
        gate.set()


@pytest.fixture
def fan(ctx: zmq.Context) -> Iterator[fanout_module.Fanout]:
    xpub = ctx.socket(zmq.XPUB)
    fanout = fanout_module.SignalFanouts(LIMIT, 4096).attach(xpub)
    xpub.bind(f"inproc://gc-lag-{id(xpub)}")
    yield fanout
    fanout.close()
    xpub.close(linger=0)


def _subscribed(ctx, socks, fan) -> tuple[zmq.Socket, object]:
    sub = subscribe(ctx, socks, fan.sock.getsockopt_string(zmq.LAST_ENDPOINT))

    def arrived() -> bool:
        fan.read_input()
        return len(fan.subscribers) == 1

    assert wait_until(arrived, timeout=30)
    return sub, next(iter(fan))


def _emission(index: int) -> protocol.SignalEmission:
    return protocol.SignalEmission("data", [bytes([index]) * PAYLOAD])


def test_a_reader_that_keeps_up_is_not_dropped_while_the_gc_lags(
    ctx, socks, fan, lagging_gc
):
    sub, record = _subscribed(ctx, socks, fan)
    looked_full = 0
    for index in range(COUNT):
        # everything sent so far was read, and copied (released) by then
        looked_full += record.release() + PAYLOAD > LIMIT
        fan.publish(_emission(index))
        assert fan.owner.dropped == 0, f"emission {index} dropped"
        assert sub.poll(20000)
        emission = protocol.decode_signal(sub.recv_multipart())
        assert bytes(emission.args[0][:1]) == bytes([index])
    assert looked_full > 0  # the model holds: the lag alone made it look full
    assert lagging_gc[0] > 0


def test_a_reader_that_reads_nothing_is_still_dropped_while_the_gc_lags(
    ctx, socks, fan, lagging_gc
):
    sub, record = _subscribed(ctx, socks, fan)
    for index in range(COUNT):
        fan.publish(_emission(index))
    assert fan.owner.dropped_for_some == record.dropped > 0
    assert record.release() <= LIMIT
    # judged slow for a few drops at a time: not a wait for every drop
    assert 1 <= lagging_gc[0] < record.dropped
    received = 0
    while sub.poll(0 if received else 20000):  # all of it queued already
        sub.recv_multipart()
        received += 1
    assert received == COUNT - record.dropped
