"""Signals carrying frames through shared memory (issue 14), over ipc:// and
tcp 127.0.0.1, in the live engine: a claimed subscriber gets its signal's
arrays as references (one copy for all subscribers, none for a pool frame),
released on garbage collection; small arrays, unclaimed subscribers and
the off switches keep today's frames."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from conftest import wait_until
from shm_helpers import (
    DTYPE,
    SHAPE,
    in_shared_memory,
    inside_its_mapping,
    needs_shm,
    options,
)
from shm_signal_helpers import SignalCamera, SignalCameraProxy, bound

from framerpc.client import shm_signals as client_shm_signals

pytestmark = needs_shm


def test_a_signal_array_arrives_in_shared_memory(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert bound(proxy) and camera.stats["shm_signal_bound"] == 1
        camera.emit_plain(7)
        frame, seq = proxy.next()
        assert seq == 7 and frame.shape == SHAPE and frame.dtype == DTYPE
        assert np.all(frame == 7)
        # zero copy on the client: its array is the mapped segment itself
        assert in_shared_memory(frame) and inside_its_mapping(frame)
        assert not frame.flags.writeable
        with pytest.raises(ValueError):
            frame[0, 0] = 1
        stats = camera.stats
        assert stats["shm_signal_refs"] == 1 and stats["shm_signal_copies"] == 1
        assert stats["shm_signal_slots_held"] == 1
        # the server refills its array: the client's copy does not change
        camera.emit_plain(8)
        second, seq = proxy.next()
        assert seq == 8 and np.all(second == 8) and np.all(frame == 7)
        del frame, second


def test_a_pool_frame_in_a_signal_is_not_copied(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert bound(proxy)
        camera.emit_pool(3)
        frame, seq = proxy.next()
        assert seq == 3 and np.all(frame == 3) and in_shared_memory(frame)
        # the client's memory is the pool's segment
        assert frame.base._map.name == camera.pool._segment.name
        assert camera.stats["shm_signal_copies"] == 0
        assert camera.pool.available == 3  # held for the client
        del frame
        assert wait_until(lambda: camera.pool.available == 4)
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)


def test_several_subscribers_share_one_copy_released_by_all(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    proxies = [SignalCameraProxy(ctx, camera.url) for _ in range(3)]
    try:
        assert all(bound(proxy) for proxy in proxies)
        camera.emit_plain(5)
        frames = [proxy.next()[0] for proxy in proxies]
        assert all(np.all(f == 5) and in_shared_memory(f) for f in frames)
        assert len({f.base._map.name for f in frames}) == 1  # one segment
        stats = camera.stats
        assert stats["shm_signal_copies"] == 1 and stats["shm_signal_refs"] == 3
        assert stats["shm_signal_slots_held"] == 1
        # the slot stays out until the last holder released it
        del frames[0:2]
        assert proxies[0].ping() == 1 and proxies[1].ping() == 1  # releases sent
        assert camera.stats["shm_signal_slots_held"] == 1
        assert np.all(frames[0] == 5)
        del frames
        gc.collect()
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
        assert camera.stats["shm_bogus_releases"] == 0
    finally:
        for proxy in proxies:
            proxy.close()


def test_a_dropped_array_gives_its_slot_back(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        for seq in range(6):
            camera.emit_plain(seq)
            frame, got = proxy.next()
            assert got == seq and np.all(frame == seq) and in_shared_memory(frame)
            del frame
        # the timer sends the releases: no call needed; segments reused
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
        assert camera.stats["shm_signal_copies"] == 6
        assert camera.stats["shm_signal_fallbacks"] == 0


def test_small_arrays_travel_over_the_socket(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert bound(proxy)
        camera.emit_small(4)
        frame, seq = proxy.next()
        assert seq == 4 and np.all(frame == 4) and not in_shared_memory(frame)
        assert camera.stats["shm_signal_refs"] == 0


@pytest.mark.parametrize("side", ["server", "client"])
def test_the_off_switch_keeps_todays_frames(ctx, shm_url, serve, side) -> None:
    off = {"options": options(shm=False)}
    camera = serve(SignalCamera(ctx, shm_url, **(off if side == "server" else {})))
    with SignalCameraProxy(
        ctx, camera.url, **(off if side == "client" else {})
    ) as proxy:
        assert not bound(proxy)
        camera.emit_plain(2)
        frame, seq = proxy.next()
        assert seq == 2 and np.all(frame == 2) and not in_shared_memory(frame)
        assert camera.stats.get("shm_signal_refs", 0) == 0


def test_an_unclaimed_subscriber_gets_frames_next_to_a_claimed_one(
    ctx, shm_url, serve, monkeypatch
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as claimed:
        monkeypatch.setattr(client_shm_signals, "claim", lambda client: False)
        with SignalCameraProxy(ctx, camera.url) as older:  # never claims
            assert bound(claimed) and not bound(older)
            assert older._shm is not None  # it shook hands for replies
            camera.emit_plain(6)
            mine, theirs = claimed.next()[0], older.next()[0]
            assert in_shared_memory(mine) and not in_shared_memory(theirs)
            assert np.all(mine == 6) and np.all(theirs == 6)
            assert camera.stats["shm_signal_refs"] == 1
            del mine, theirs


def test_an_array_no_listener_keeps_frees_its_pool_slot_at_once(
    ctx, shm_url, serve, monkeypatch
) -> None:
    from framerpc.client import shm as client_shm

    monkeypatch.setattr(client_shm, "_FLUSH_S", 60.0)  # no timer flush
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        proxy.keep = False  # the listener lets every array go
        for seq in range(3 * camera.pool.depth):  # more emissions than slots
            camera.emit_pool(seq)
            # the receiver sends the release after the listener returned
            assert wait_until(lambda: camera.pool.available == camera.pool.depth)
        assert camera.stats["shm_signal_copies"] == 0
        assert camera.stats["shm_signal_refs"] == 3 * camera.pool.depth
        assert camera.stats["shm_signal_slots_held"] == 0


def test_a_server_that_refuses_the_claim_keeps_todays_frames(
    ctx, shm_url, serve, monkeypatch
) -> None:
    from framerpc.errors import ProtocolError
    from framerpc.server import dispatch

    def older(self, request):  # a server before signals through shm
        raise ProtocolError("unknown event 'SHM_SUBSCRIBER'")

    monkeypatch.setattr(dispatch.DispatchMixin, "_shm_subscriber", older)
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert proxy._shm is not None and not bound(proxy)
        camera.emit_plain(3)
        frame, seq = proxy.next()
        assert seq == 3 and np.all(frame == 3) and not in_shared_memory(frame)
        del frame
