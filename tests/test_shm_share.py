"""One client's share of a server's shared memory (issue 14, ``server.shm_share``):
a client keeping every array it fetched reaches its share of the copy arena
and gets the rest over the socket while another client still gets shared
memory; a client keeps at most half a pool; a subscriber keeping signal
copies reaches its share of the signals' arena alone."""

from __future__ import annotations

import numpy as np
from conftest import wait_until
from shm_helpers import (
    DEPTH,
    SHAPE,
    ShmCamera,
    ShmCameraProxy,
    in_shared_memory,
    inside_its_mapping,
    needs_shm,
    options,
)
from shm_signal_helpers import SignalCamera, SignalCameraProxy, bound

pytestmark = needs_shm

FRAME = int(np.prod(SHAPE)) * 2  # 1 MiB: whole pages
# an arena of 16 frames: a quarter (the default share) is 4 of them
ARENA = options(shm_max_bytes=16 * FRAME)


def test_a_hoarding_client_reaches_its_share_and_others_keep_shared_memory(
    ctx, shm_url, serve
) -> None:
    camera = serve(ShmCamera(ctx, shm_url, options=ARENA))
    with (
        ShmCameraProxy(ctx, camera.url) as hoarder,
        ShmCameraProxy(ctx, camera.url) as other,
    ):
        held = [hoarder.plain(seq) for seq in range(6)]  # never released
        assert all(np.all(frame == info["seq"]) for frame, info in held)
        assert [in_shared_memory(frame) for frame, _ in held] == [True] * 4 + [
            False
        ] * 2
        stats = camera.stats
        assert stats["shm_fallbacks"] == 2 and stats["shm_copies"] == 4
        # the arena has room: another client still gets shared memory
        frame, _ = other.plain(7)
        assert in_shared_memory(frame) and inside_its_mapping(frame)
        assert np.all(frame == 7)
        assert camera.stats["shm_fallbacks"] == 2
        del frame
        # the hoarder's releases give its share back
        del held
        assert wait_until(lambda: camera.stats["shm_slots_held"] == 0)
        again = [hoarder.plain(seq) for seq in range(4)]
        assert all(in_shared_memory(frame) for frame, _ in again)
        assert camera.stats["shm_fallbacks"] == 2
        del again


def test_a_share_below_one_frame_still_allows_one(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url, options=options(shm_client_share=0.001)))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        first, _ = proxy.plain(1)
        second, _ = proxy.plain(2)
        assert in_shared_memory(first) and not in_shared_memory(second)
        assert np.all(first == 1) and np.all(second == 2)
        assert camera.stats["shm_fallbacks"] == 1
        del first
        assert wait_until(lambda: camera.stats["shm_slots_held"] == 0)
        third, _ = proxy.plain(3)
        assert in_shared_memory(third)
        del third, second


def test_a_share_of_one_lets_a_client_take_the_whole_arena(ctx, shm_url, serve) -> None:
    camera = serve(
        ShmCamera(
            ctx, shm_url, options=options(shm_max_bytes=4 * FRAME, shm_client_share=1)
        )
    )
    with ShmCameraProxy(ctx, camera.url) as proxy:
        held = [proxy.plain(seq) for seq in range(5)]
        assert [in_shared_memory(frame) for frame, _ in held] == [True] * 4 + [False]
        assert camera.stats["shm_fallbacks"] == 1  # the arena, not a share
        del held


def test_a_client_holds_at_most_half_a_pool(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    with (
        ShmCameraProxy(ctx, camera.url) as hoarder,
        ShmCameraProxy(ctx, camera.url) as other,
    ):
        held = [hoarder.grab_pool(seq) for seq in range(DEPTH + 1)]
        assert all(np.all(frame == info["seq"]) for frame, info in held)
        pool_name = camera.pool._segment.name
        in_pool = [frame.base._map.name == pool_name for frame, _ in held]
        assert in_pool == [True] * (DEPTH // 2) + [False] * (DEPTH + 1 - DEPTH // 2)
        assert camera.stats["shm_copies"] == DEPTH + 1 - DEPTH // 2
        # the camera keeps the other half (the copies' slots came back)
        assert wait_until(lambda: camera.pool.available == DEPTH - DEPTH // 2)
        # another client still gets pool frames in place
        frame, info = other.grab_pool(9)
        assert frame.base._map.name == pool_name and np.all(frame == 9)
        assert camera.stats["shm_copies"] == DEPTH + 1 - DEPTH // 2
        del frame, info
        del held
        assert wait_until(lambda: camera.pool.available == DEPTH)


def test_a_subscriber_keeping_signal_copies_reaches_its_share_alone(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url, options=ARENA))
    keeper = SignalCameraProxy(ctx, camera.url)
    other = SignalCameraProxy(ctx, camera.url)
    try:
        assert bound(keeper) and bound(other)
        kept = []
        for seq in range(6):
            camera.emit_plain(seq)
            kept.append(keeper.next())
            frame, got = other.next()  # dropped at once: it holds nothing
            assert got == seq and in_shared_memory(frame) and inside_its_mapping(frame)
            del frame
        assert all(np.all(frame == seq) for frame, seq in kept)
        assert [in_shared_memory(frame) for frame, _ in kept] == [True] * 4 + [
            False
        ] * 2
        assert camera.stats["shm_signal_fallbacks"] == 2
        del kept  # its share comes back
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
        camera.emit_plain(9)
        frame, seq = keeper.next()
        assert seq == 9 and in_shared_memory(frame)
        del frame
        other.next()
    finally:
        keeper.close()
        other.close()
