"""A signal subscription that ends while its client stays connected (issue
14, ``server.shm_signals``): the arrays the client still holds keep their
slots, never refilled under it; the references sent to the subscription
and never received come back at the client's word (``SHM_SUBSCRIBER``
``[SUBSCRIPTION_ENDED, id, held]``, sent when its receiver stops), or
when the client goes; a departure alone frees nothing."""

from __future__ import annotations

import asyncio
import os
import threading
import zlib

import numpy as np
import pytest
from conftest import wait_until
from shm_helpers import child_process, in_shared_memory, needs_shm
from shm_signal_helpers import SignalCamera, SignalCameraProxy, bound

from framerpc import RPCClient, RPCServer
from framerpc.client import shm_signals as client_shm_signals
from framerpc.wire import shm as wire_shm

pytestmark = needs_shm

_TESTS = os.path.dirname(os.path.abspath(__file__))


def _stop_signals(proxy: SignalCameraProxy, word: bool = True) -> None:
    """Close the proxy's signal subscription alone (its SUB socket goes,
    the RPC connection stays), as a viewer that stops listening; without
    ``word``, as if the client's word were lost."""
    receiver = proxy._signal_receiver
    assert receiver is not None and receiver.shm is not None
    if not word:
        receiver.shm._end = None
    receiver.stop()
    receiver.join(10)
    assert not receiver.is_alive()


def _hold_pool_frames(camera: SignalCamera, proxy: SignalCameraProxy) -> list:
    """Two pool frames emitted to ``proxy`` (in place: half the pool),
    kept (no release is sent while they live)."""
    camera.emit_pool(1)
    camera.emit_pool(2)
    held = [proxy.next(), proxy.next()]
    assert [seq for _, seq in held] == [1, 2]
    assert all(in_shared_memory(frame) for frame, _ in held)
    assert camera.stats["shm_signal_slots_held"] == 2
    assert camera.pool.available == camera.pool.depth - 2
    return [frame for frame, _ in held]


def _sums(frames: list) -> list[int]:
    return [zlib.crc32(frame.tobytes()) for frame in frames]


def _refill_pool(camera: SignalCamera, rounds: int = 5) -> None:
    """The camera fills every pool slot it can get, again and again, and
    emits each: a slot given back too early is overwritten."""
    for turn in range(rounds):
        frames = [camera.pool.acquire(timeout=10) for _ in range(camera.pool.available)]
        for i, frame in enumerate(frames):
            frame[...] = 1000 + 10 * turn + i
            camera.frame_ready.emit(frame, 1000 + i)
        del frames


def _all_slots_back(camera: SignalCamera) -> None:
    assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
    assert wait_until(lambda: camera.pool.available == camera.pool.depth)
    frames = [camera.pool.acquire(timeout=10) for _ in range(camera.pool.depth)]
    del frames


def test_held_frames_never_change_after_the_subscription_closed(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert bound(proxy)
        held = _hold_pool_frames(camera, proxy)
        sums = _sums(held)
        _stop_signals(proxy)  # the word: it holds both
        assert wait_until(lambda: camera.stats["shm_signal_bound"] == 0)
        _refill_pool(camera)
        assert _sums(held) == sums
        assert np.all(held[0] == 1) and np.all(held[1] == 2)
        stats = camera.stats
        assert stats["shm_signal_slots_held"] == 2
        assert stats["shm_signal_reclaimed"] == 0
        del held  # now they go: with the next call or the link's timer
        assert proxy.ping() == 1
        _all_slots_back(camera)
        assert camera.stats["shm_signal_bogus"] == 0


def test_references_lost_in_flight_come_back_at_the_word(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    entered, go_on = threading.Event(), threading.Event()

    def block(frame: np.ndarray, seq: int) -> None:
        if seq == 10:  # the receiver reads nothing more meanwhile
            entered.set()
            go_on.wait(20)

    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert bound(proxy)
        held = _hold_pool_frames(camera, proxy)
        sums = _sums(held)
        proxy.keep = False
        proxy.frame_ready.connect(block)
        camera.emit_plain(10)
        assert entered.wait(20)
        for seq in (11, 12, 13):  # sent, never read
            camera.emit_plain(seq)
        assert camera.stats["shm_signal_slots_held"] == 6
        receiver = proxy._signal_receiver
        receiver.stop()
        go_on.set()
        receiver.join(10)
        assert not receiver.is_alive()
        assert wait_until(lambda: camera.stats["shm_signal_reclaimed"] == 3)
        assert proxy.ping() == 1  # 10's release, if still queued
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 2)
        stats = camera.stats
        assert stats["shm_signal_reclaimed"] == 3 and stats["shm_signal_bound"] == 0
        _refill_pool(camera)
        assert _sums(held) == sums
        del held
        assert proxy.ping() == 1
        _all_slots_back(camera)


def test_stopping_the_receiver_closes_the_subscription_alone(
    ctx, shm_url, serve, caplog
) -> None:
    # the older API's way (docs/guides/frames.md): proxy._signal_receiver
    # .stop(), no join; the proxy stays usable, and a handshake again
    # later (a restarted server) claims no subscription for it
    camera = serve(SignalCamera(ctx, shm_url))
    entered, go_on = threading.Event(), threading.Event()

    def block(frame: np.ndarray, seq: int) -> None:
        if seq == 10:
            entered.set()
            go_on.wait(20)

    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert bound(proxy)
        proxy.keep = False
        proxy.frame_ready.connect(block)
        camera.emit_plain(10)
        assert entered.wait(20)
        for seq in (11, 12):  # sent, never read
            camera.emit_plain(seq)
        proxy._signal_receiver.stop()
        go_on.set()
        assert wait_until(lambda: camera.stats["shm_signal_reclaimed"] == 2)
        assert proxy.ping() == 1
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
        assert not proxy._signal_receiver.is_alive()
        link = proxy._shm
        link.retry.claim_again()  # as after a handshake again
        assert wait_until(lambda: link.retry.claims_due == 0)
        assert not client_shm_signals.claim(proxy)
        assert proxy.ping() == 1
        stats = camera.stats
        assert stats["shm_signal_bound"] == 0 and stats["shm_signal_bogus"] == 0
        assert "not confirmed" not in caplog.text


class _GatedAPI:
    def wait_gate(self) -> int:
        raise NotImplementedError


class _GatedCamera(_GatedAPI, SignalCamera):
    """A camera whose ``wait_gate`` returns once ``gate`` is set."""

    def __init__(self, *args: object, **kw: object) -> None:
        self.entered, self.gate = threading.Event(), threading.Event()
        SignalCamera.__init__(self, *args, **kw)  # type: ignore[arg-type]

    @RPCServer.register_method_json(timeout=None)
    def wait_gate(self) -> int:
        self.entered.set()
        self.gate.wait(30)
        return 2


@RPCClient.register_interface(_GatedAPI)
class _GatedProxy(_GatedAPI, SignalCameraProxy):
    pass


def test_the_word_waits_for_a_call_in_flight(ctx, shm_url, serve) -> None:
    # the receiver ends while another thread's call holds the proxy's lock
    # longer than the proxy's timeout: the word used to be dropped, and
    # what was sent and never read stayed held until the proxy closed
    camera = serve(_GatedCamera(ctx, shm_url))
    entered, go_on = threading.Event(), threading.Event()

    def block(frame: np.ndarray, seq: int) -> None:
        if seq == 10:  # the receiver reads nothing more meanwhile
            entered.set()
            go_on.wait(20)

    with _GatedProxy(ctx, camera.url, timeout=1000) as proxy:
        assert bound(proxy)
        held = _hold_pool_frames(camera, proxy)
        sums = _sums(held)
        proxy.keep = False
        proxy.frame_ready.connect(block)
        camera.emit_plain(10)
        assert entered.wait(20)
        for seq in (11, 12, 13):  # sent, never read
            camera.emit_plain(seq)
        call = threading.Thread(target=proxy.wait_gate)
        call.start()
        try:
            assert camera.entered.wait(20)  # the call holds the lock
            receiver = proxy._signal_receiver
            receiver.stop()
            go_on.set()
            receiver.join(10)  # it does not wait for the call
            assert not receiver.is_alive()
        finally:
            go_on.set()
            camera.gate.set()
            call.join(20)
        assert not call.is_alive()
        assert wait_until(lambda: camera.stats["shm_signal_reclaimed"] == 3)
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 2)
        stats = camera.stats
        assert stats["shm_signal_bound"] == 0 and stats["shm_signal_bogus"] == 0
        _refill_pool(camera)
        assert _sums(held) == sums
        del held
        assert proxy.ping() == 1
        _all_slots_back(camera)
        assert camera.stats["shm_signal_reclaimed"] == 3


@pytest.mark.parametrize("loop", ["thread", "asyncio"])
def test_a_departure_alone_frees_nothing_until_the_client_closes(
    ctx, shm_url, serve, loop
) -> None:
    # nothing is emitted and stats are not read while it departs: only
    # the serve loop's idle turns (serve_forever's, or ``await
    # server.serve()``'s) find it, and they only unbind it
    camera = SignalCamera(ctx, shm_url)
    if loop == "thread":
        serve(camera)
        thread = None
    else:
        thread = threading.Thread(target=lambda: asyncio.run(camera.serve()))
        thread.start()
    try:
        proxy = SignalCameraProxy(ctx, camera.url)
        try:
            assert bound(proxy)
            held = _hold_pool_frames(camera, proxy)
            sums = _sums(held)
            _stop_signals(proxy, word=False)
            assert wait_until(lambda: camera.stats["shm_signal_bound"] == 0, 30)
            _refill_pool(camera)
            assert _sums(held) == sums
            stats = camera.stats
            assert stats["shm_signal_slots_held"] == 2
            assert stats["shm_signal_reclaimed"] == 0
            assert proxy.ping() == 1
        finally:
            proxy.close()  # goodbye: everything it held comes back
        assert wait_until(lambda: camera.stats["shm_signal_reclaimed"] == 2)
        _all_slots_back(camera)
        del held
    finally:
        if thread is not None:
            camera.stop_server()
            thread.join(20)
            assert not thread.is_alive()


def test_a_word_on_another_clients_subscription_frees_nothing(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with (
        SignalCameraProxy(ctx, camera.url) as owner,
        SignalCameraProxy(ctx, camera.url) as other,
    ):
        assert bound(owner) and bound(other)
        camera.emit_pool(1)
        kept = [owner.next(), other.next()]
        ident = owner._signal_receiver.shm.claimed
        assert ident is not None and ident != other._signal_receiver.shm.claimed
        ask = client_shm_signals._ask
        # someone else's, then malformed ones: all refused
        assert not ask(other, [wire_shm.SUBSCRIPTION_ENDED, ident, []])
        assert not ask(owner, [wire_shm.SUBSCRIPTION_ENDED, ident, [["x"]]])
        assert not ask(owner, [wire_shm.SUBSCRIPTION_ENDED, [ident], []])
        stats = camera.stats
        assert stats["shm_signal_bogus"] == 3
        assert stats["shm_signal_bound"] == 2
        assert stats["shm_signal_slots_held"] == 1
        assert stats["shm_signal_reclaimed"] == 0
        _stop_signals(owner, word=False)  # departed, its word not sent yet
        assert wait_until(lambda: camera.stats["shm_signal_bound"] == 1, 30)
        assert not ask(other, [wire_shm.SUBSCRIPTION_ENDED, ident, []])
        assert camera.stats["shm_signal_reclaimed"] == 0
        # the owner's own word: it holds the frame, nothing to take back
        link = owner._shm
        assert ask(owner, client_shm_signals.word(ident, link))
        stats = camera.stats
        assert stats["shm_signal_slots_held"] == 1
        assert stats["shm_signal_reclaimed"] == 0 and stats["shm_signal_bogus"] == 4
        assert all(np.all(frame == 1) for frame, _ in kept)
        del kept
        assert owner.ping() == 1 and other.ping() == 1
        _all_slots_back(camera)


_DEPARTS = """
import sys, time, zmq
sys.path.insert(0, sys.argv[2])
from shm_signal_helpers import SignalCameraProxy, bound
ctx = zmq.Context()
client = SignalCameraProxy(ctx, sys.argv[1], timeout=20000)
print("bound" if bound(client) else "not bound", flush=True)
held = [client.next(), client.next()]
receiver = client._signal_receiver
receiver.shm._end = None  # departs without its word
receiver.stop()
receiver.join(10)
print("departed", flush=True)
time.sleep(60)
"""


def test_a_departed_subscriber_s_client_that_dies_gives_its_slots_back(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with child_process(_DEPARTS, camera.url, _TESTS) as child:
        assert child.stdout.readline().strip() == "bound"
        camera.emit_pool(1)
        camera.emit_pool(2)
        assert child.stdout.readline().strip() == "departed"
        assert wait_until(lambda: camera.stats["shm_signal_bound"] == 0, 30)
        stats = camera.stats
        assert stats["shm_signal_slots_held"] == 2
        assert stats["shm_signal_reclaimed"] == 0
    assert wait_until(lambda: camera.stats["shm_signal_reclaimed"] == 2, 30)
    _all_slots_back(camera)
