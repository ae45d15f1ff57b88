"""Who holds a signal's shared-memory slot and until when (issue 14): the
per-subscriber cap falls back to the socket, a refused send, a departed or
killed subscriber give their references back, and a second client can
neither claim another's subscriber nor release its slots."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
from conftest import wait_until
from shm_helpers import child_process, in_shared_memory, needs_shm, options
from shm_signal_helpers import SignalCamera, SignalCameraProxy, bound

from framerpc.client import shm_signals as client_shm_signals
from framerpc.server import fanout
from framerpc.wire import shm as wire_shm

pytestmark = needs_shm

_TESTS = os.path.dirname(os.path.abspath(__file__))


def test_beyond_its_slot_cap_a_subscriber_gets_frames(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url, options=options(shm_max_slots=2)))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        held = []
        for seq in range(4):
            camera.emit_plain(seq)
            held.append(proxy.next())
        assert [seq for _, seq in held] == [0, 1, 2, 3]
        assert all(np.all(frame == seq) for frame, seq in held)
        assert [in_shared_memory(frame) for frame, _ in held] == [
            True,
            True,
            False,
            False,
        ]
        stats = camera.stats
        assert stats["shm_signal_fallbacks"] == 2
        assert stats["shm_signal_slots_held"] == 2
        del held
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
        camera.emit_plain(9)  # room again
        frame, seq = proxy.next()
        assert seq == 9 and in_shared_memory(frame)
        del frame


def test_a_refused_send_gives_the_references_back(
    ctx, shm_url, serve, monkeypatch
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert bound(proxy)
        real = fanout.Fanout._send_each

        def refuse(self, frames, skip, subs=None):  # a full queue for all
            for sub in subs if subs is not None else list(self):
                self.owner.drop_for_one(sub, "its queue is full")

        monkeypatch.setattr(fanout.Fanout, "_send_each", refuse)
        camera.emit_plain(1)
        monkeypatch.setattr(fanout.Fanout, "_send_each", real)
        stats = camera.stats
        assert stats["shm_signal_refused"] == 1
        assert stats["shm_signal_slots_held"] == 0
        assert stats["dropped_signals_for_some"] == 1
        camera.emit_plain(2)  # the next one gets through
        frame, seq = proxy.next()
        assert seq == 2 and in_shared_memory(frame) and np.all(frame == 2)
        del frame


def test_a_subscriber_that_stops_reading_then_leaves_gives_its_slots_back(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url, options=options(shm_max_slots=3)))
    proxy = SignalCameraProxy(ctx, camera.url)
    try:
        stalled, go = threading.Event(), threading.Event()

        def stall(frame: np.ndarray, seq: int) -> None:
            stalled.set()
            go.wait(30)

        proxy.frame_ready.connect(stall)
        for seq in range(6):  # they wait in queues, unread
            camera.emit_plain(seq)
        assert stalled.wait(20)
        stats = camera.stats
        assert stats["shm_signal_slots_held"] == 3  # the cap, no more
        assert stats["shm_signal_fallbacks"] == 3
    finally:
        proxy.keep = False
        go.set()
        while not proxy.received.empty():  # nothing kept
            proxy.received.get()
        proxy.close()  # unread emissions are dropped, then goodbye
    assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
    assert wait_until(lambda: camera.stats["shm_signal_bound"] == 0)


def test_a_subscriber_holding_pool_frames_leaves_the_camera_half_its_pool(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    proxy = SignalCameraProxy(ctx, camera.url)
    try:  # the listener keeps every frame (a stalled viewer alike)
        depth = camera.pool.depth
        for seq in range(depth + 2):  # acquire never waits
            camera.emit_pool(seq)
        held = [proxy.next() for _ in range(depth + 2)]
        assert all(np.all(f == seq) and in_shared_memory(f) for f, seq in held)
        stats = camera.stats
        assert stats["shm_signal_copies"] == depth + 2 - depth // 2
        assert camera.pool.available == depth - depth // 2
        del held
        assert wait_until(lambda: camera.pool.available == depth)
    finally:
        proxy.close()


_CLIENT = """
import sys, time, zmq
sys.path.insert(0, sys.argv[2])
from shm_signal_helpers import SignalCameraProxy, bound
ctx = zmq.Context()
client = SignalCameraProxy(ctx, sys.argv[1], timeout=20000)
print("bound" if bound(client) else "not bound", flush=True)
held = [client.next(), client.next()]
print("held", flush=True)
time.sleep(60)
"""


def test_a_killed_subscriber_gives_its_slots_back(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with child_process(_CLIENT, camera.url, _TESTS) as child:
        assert child.stdout.readline().strip() == "bound"
        camera.emit_plain(1)
        camera.emit_pool(2)
        assert child.stdout.readline().strip() == "held"
        assert camera.stats["shm_signal_slots_held"] == 2
        assert camera.pool.available == 3
    assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
    assert wait_until(lambda: camera.pool.available == 4)
    assert wait_until(lambda: camera.stats["shm_signal_bound"] == 0)


def test_a_frozen_subscriber_gives_its_slots_back(ctx, shm_url, serve) -> None:
    # short heartbeats: the frozen client's connection drops within ~1.5 s;
    # it holds signal slots only, which the server's probes must cover
    fast = options(heartbeat_ivl_ms=250, heartbeat_timeout_ms=1250)
    camera = serve(SignalCamera(ctx, shm_url, options=fast))
    with child_process(_CLIENT, camera.url, _TESTS) as child:
        assert child.stdout.readline().strip() == "bound"
        camera.emit_plain(1)
        camera.emit_pool(2)
        assert child.stdout.readline().strip() == "held"
        assert camera.stats["shm_slots_held"] == 0  # no reply's slot
        child.send_signal(signal.SIGSTOP)
        # the process lives: only its lost connection can free the slots
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0, 30)
        assert child.poll() is None
        assert wait_until(lambda: camera.pool.available == 4)


def test_a_second_client_cannot_claim_another_clients_subscriber(
    ctx, shm_url, serve, monkeypatch
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as attacker:
        assert bound(attacker)
        monkeypatch.setattr(client_shm_signals, "claim", lambda client: False)
        with SignalCameraProxy(ctx, camera.url) as victim:  # unclaimed
            receiver = victim._signal_receiver
            # the victim listens for nonces, without claiming
            receiver.shm = spy = client_shm_signals.SignalShm(victim._shm)
            ask = client_shm_signals._ask
            assert ask(attacker, [receiver.subscriber])  # a nonce went out...
            nonce = spy.next_nonce(20)  # ...to the victim's subscription
            assert type(nonce) is bytes and len(nonce) == 16
            camera.emit_small(0)  # a sentinel behind any nonce to the attacker
            assert attacker.next()[1] == 0 and victim.next()[1] == 0
            assert attacker._signal_receiver.shm.next_nonce(0) is None
            assert not ask(attacker, [os.urandom(16)])  # guessing fails
            assert not ask(victim, [nonce])  # it was not the victim's claim
            assert camera.stats["shm_signal_bound"] == 1  # the attacker's own
            camera.emit_plain(3)
            theirs, mine = victim.next()[0], attacker.next()[0]
            assert not in_shared_memory(theirs) and np.all(theirs == 3)
            assert in_shared_memory(mine) and np.all(mine == 3)
            del theirs, mine


def test_a_client_without_shared_memory_cannot_claim(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url, options=options(shm=False)) as proxy:
        receiver = proxy._signal_receiver
        assert proxy._shm is None and receiver.subscriber is not None
        assert not client_shm_signals._ask(proxy, [receiver.subscriber])
        assert camera.stats["shm_signal_bound"] == 0


def test_a_client_cannot_release_another_clients_signal_slot(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with (
        SignalCameraProxy(ctx, camera.url) as owner,
        SignalCameraProxy(ctx, camera.url) as other,
    ):
        camera.emit_plain(4)
        frame, _ = owner.next()
        other.next()  # its own reference, released at once
        pair = frame.base._slot
        assert pair[0] >= wire_shm.SIGNAL_SLOT_BASE
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 1)
        other._shm.pending.append(pair)  # the other's release of our slot
        other._shm.pending.append(pair)
        assert other.ping() == 1
        stats = camera.stats
        assert stats["shm_signal_bogus"] == 2
        assert stats["shm_signal_slots_held"] == 1
        assert np.all(frame == 4)
        del frame
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
