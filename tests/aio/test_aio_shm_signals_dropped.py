"""framerpc.aio: an asyncio proxy that closes its signal subscription and
stays connected sends the server its word on what it still holds (issue
14, ``server.shm_signals``; the sync client's case:
``test_shm_signals_dropped``): the references sent to the subscription
and never read come back, the arrays it holds keep their slots."""

from __future__ import annotations

import numpy as np
from aio_helpers import run, until
from shm_helpers import in_shared_memory, needs_shm
from shm_signal_helpers import SignalCamera, SignalCameraAPI

import framerpc.aio

pytestmark = needs_shm


def test_a_closed_signal_hub_sends_the_word(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    depth = camera.pool.depth

    async def main() -> None:
        async with framerpc.aio.connect(
            SignalCameraAPI, camera.url, context=ctx
        ) as cam:
            assert cam.signal_hub.shm is not None
            frames = cam.frame_ready.subscribe()
            camera.emit_plain(5)
            camera.emit_pool(6)
            held = [await anext(frames) for _ in range(2)]
            assert [seq for _, seq in held] == [5, 6]
            assert all(in_shared_memory(frame) for frame, _ in held)
            # sent now, never read: the loop does not run before the hub
            # stops reading (aclose stops it before its first await)
            for seq in (7, 8, 9):
                camera.emit_plain(seq)
            assert camera.stats["shm_signal_slots_held"] == 5
            await cam.signal_hub.aclose()  # the subscription alone goes
            await until(lambda: camera.stats["shm_signal_reclaimed"] == 3)
            stats = camera.stats
            assert stats["shm_signal_slots_held"] == 2
            assert stats["shm_signal_bound"] == 0
            assert stats["shm_signal_bogus"] == 0
            assert camera.pool.available == depth - 1
            assert np.all(held[0][0] == 5) and np.all(held[1][0] == 6)
            assert await cam.ping() == 1  # the proxy is still connected
            del held  # their releases free the slots
            await until(lambda: camera.stats["shm_signal_slots_held"] == 0)
            await until(lambda: camera.pool.available == depth)
            assert camera.stats["shm_signal_reclaimed"] == 3

    run(main())
