"""A subscriber that leaves while its client stays connected gives its
signal slots back (issue 14, ``server.shm_signals``): the references sent
to its subscription are taken back once the fan-out finds it departed,
whatever arrays the client still holds; another client holding the same
frames keeps them, and the dropped client's late releases free nothing."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from conftest import wait_until
from shm_helpers import in_shared_memory, needs_shm
from shm_signal_helpers import SignalCamera, SignalCameraProxy, bound

pytestmark = needs_shm


def _drop_signals(proxy: SignalCameraProxy) -> None:
    """Close the proxy's signal subscription alone (its SUB socket goes,
    the RPC connection stays), as a viewer that stops listening."""
    receiver = proxy._signal_receiver
    assert receiver is not None
    receiver.stop()
    receiver.join(10)
    assert not receiver.is_alive()


def _held_pair(camera: SignalCamera, *proxies: SignalCameraProxy) -> list:
    """A plain array (copied once) and a pool frame emitted to ``proxies``;
    what each received, kept (no release is sent while they live)."""
    camera.emit_plain(1)
    camera.emit_pool(2)
    held = [[proxy.next(), proxy.next()] for proxy in proxies]
    for (plain, one), (pooled, two) in held:
        assert (one, two) == (1, 2)
        assert in_shared_memory(plain) and in_shared_memory(pooled)
    assert camera.stats["shm_signal_slots_held"] == 2
    assert camera.pool.available == camera.pool.depth - 1
    return [[frame for frame, _ in pair] for pair in held]


def test_a_dropped_subscription_gives_its_slots_back(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert bound(proxy)
        (held,) = _held_pair(camera, proxy)
        _drop_signals(proxy)
        assert wait_until(lambda: camera.stats["shm_signal_reclaimed"] == 2, 30)
        stats = camera.stats
        assert stats["shm_signal_slots_held"] == 0
        assert stats["shm_signal_bound"] == 0
        # the camera has its whole pool again, the client still its arrays
        frames = [camera.pool.acquire(timeout=10) for _ in range(camera.pool.depth)]
        del frames
        assert proxy.ping() == 1  # the RPC connection lives on
        del held  # their releases now name slots nobody holds
        assert wait_until(lambda: camera.stats["shm_signal_bogus"] == 2)
        assert camera.stats["shm_signal_slots_held"] == 0


def test_the_other_holder_of_the_same_frames_keeps_them(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with (
        SignalCameraProxy(ctx, camera.url) as leaver,
        SignalCameraProxy(ctx, camera.url) as stayer,
    ):
        assert bound(leaver) and bound(stayer)
        gone, kept = _held_pair(camera, leaver, stayer)
        _drop_signals(leaver)
        assert wait_until(lambda: camera.stats["shm_signal_reclaimed"] == 2, 30)
        stats = camera.stats
        assert stats["shm_signal_slots_held"] == 2  # the stayer's
        assert stats["shm_signal_bound"] == 1
        assert camera.pool.available == camera.pool.depth - 1
        _churn(camera, stayer)  # new frames would reuse a slot given back
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 2)
        assert np.all(kept[0] == 1) and np.all(kept[1] == 2)
        assert np.all(gone[0] == 1)  # no slot of it was reused: still there
        del kept
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
        assert wait_until(lambda: camera.pool.available == camera.pool.depth)
        del gone


def test_a_stale_release_frees_nothing_the_other_holder_has(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with (
        SignalCameraProxy(ctx, camera.url) as leaver,
        SignalCameraProxy(ctx, camera.url) as stayer,
    ):
        assert bound(leaver) and bound(stayer)
        gone, kept = _held_pair(camera, leaver, stayer)
        pairs = [frame.base._slot for frame in gone]
        _drop_signals(leaver)
        assert wait_until(lambda: camera.stats["shm_signal_reclaimed"] == 2, 30)
        del gone  # the leaver's releases of the slots the stayer holds...
        leaver._shm.pending.extend(pairs)  # ...and each once more
        assert leaver.ping() == 1  # they go with this call
        assert wait_until(lambda: camera.stats["shm_signal_bogus"] == 4)
        stats = camera.stats
        assert stats["shm_signal_slots_held"] == 2
        assert camera.pool.available == camera.pool.depth - 1
        _churn(camera, stayer)
        assert np.all(kept[0] == 1) and np.all(kept[1] == 2)
        del kept
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
        assert wait_until(lambda: camera.pool.available == camera.pool.depth)


@pytest.mark.parametrize("loop", ["thread", "asyncio"])
def test_an_idle_server_finds_the_departure_unasked(ctx, shm_url, serve, loop) -> None:
    # nothing is emitted and stats are not read: only the serve loop's
    # idle turns (serve_forever's, or ``await server.serve()``'s) find it
    camera = SignalCamera(ctx, shm_url)
    if loop == "thread":
        serve(camera)
        thread = None
    else:
        thread = threading.Thread(target=lambda: asyncio.run(camera.serve()))
        thread.start()
    depth = camera.pool.depth
    try:
        with SignalCameraProxy(ctx, camera.url) as proxy:
            assert bound(proxy)
            camera.emit_pool(2)
            frame, seq = proxy.next()
            assert seq == 2 and in_shared_memory(frame)
            assert camera.pool.available == depth - 1
            _drop_signals(proxy)
            assert wait_until(lambda: camera.pool.available == depth, 30)
            del frame
    finally:
        if thread is not None:
            camera.stop_server()
            thread.join(20)
            assert not thread.is_alive()


def _churn(camera: SignalCamera, proxy: SignalCameraProxy) -> None:
    """Emit plain and pool frames that ``proxy`` receives and lets go: a
    slot, arena segment or pool frame freed too early is refilled."""
    for seq in range(10, 10 + camera.pool.depth):
        camera.emit_plain(seq)
        camera.emit_pool(seq + 100)
        frame, got = proxy.next()
        assert got == seq and np.all(frame == seq)
        frame, got = proxy.next()
        assert got == seq + 100 and np.all(frame == seq + 100)
        del frame
