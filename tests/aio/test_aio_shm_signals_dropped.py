"""framerpc.aio: an asyncio proxy that closes its signal subscription and
stays connected gives its signal slots back (issue 14,
``server.shm_signals``; the sync client's case: ``test_shm_signals_dropped``)."""

from __future__ import annotations

from aio_helpers import run, until
from shm_helpers import in_shared_memory, needs_shm
from shm_signal_helpers import SignalCamera, SignalCameraAPI

import framerpc.aio

pytestmark = needs_shm


def test_a_closed_signal_hub_gives_its_slots_back(ctx, shm_url, serve) -> None:
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
            assert camera.stats["shm_signal_slots_held"] == 2
            assert camera.pool.available == depth - 1
            await cam.signal_hub.aclose()  # the subscription alone goes
            await until(lambda: camera.stats["shm_signal_reclaimed"] == 2, 30)
            stats = camera.stats
            assert stats["shm_signal_slots_held"] == 0
            assert stats["shm_signal_bound"] == 0
            taken = [camera.pool.acquire(timeout=10) for _ in range(depth)]
            del taken
            assert await cam.ping() == 1  # the proxy is still connected
            del held  # releases of slots it no longer holds: ignored
            await until(lambda: camera.stats["shm_signal_bogus"] == 2)
            assert camera.stats["shm_signal_slots_held"] == 0

    run(main())
