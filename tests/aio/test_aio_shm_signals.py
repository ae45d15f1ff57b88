"""framerpc.aio: signals carrying frames through shared memory (issue 14),
over ipc:// and tcp 127.0.0.1, in the live engine: the asyncio proxy claims
its subscription, its signal arrays lie in the server's segment, and their
slots come back once collected; the off switch keeps the socket."""

from __future__ import annotations

import asyncio

import numpy as np
from aio_helpers import run, until
from devices import bind_again
from shm_helpers import DTYPE, SHAPE, in_shared_memory, needs_shm, options
from shm_signal_helpers import SignalCamera, SignalCameraAPI

import framerpc.aio

pytestmark = needs_shm


def test_a_signal_array_arrives_in_shared_memory(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))

    async def main() -> None:
        async with framerpc.aio.connect(
            SignalCameraAPI, camera.url, context=ctx
        ) as cam:
            assert cam.signal_hub.shm is not None
            assert camera.stats["shm_signal_bound"] == 1
            frames = cam.frame_ready.subscribe()
            camera.emit_plain(5)
            camera.emit_pool(6)
            (plain, seq), (pooled, seq2) = [await anext(frames) for _ in range(2)]
            assert (seq, seq2) == (5, 6)
            assert plain.shape == SHAPE and plain.dtype == DTYPE
            assert np.all(plain == 5) and np.all(pooled == 6)
            assert in_shared_memory(plain) and in_shared_memory(pooled)
            assert not plain.flags.writeable
            assert pooled.base._map.name == camera.pool._segment.name
            stats = camera.stats
            assert stats["shm_signal_copies"] == 1 and stats["shm_signal_refs"] == 2
            assert camera.pool.available == 3
            del plain, pooled
            await until(lambda: camera.stats["shm_signal_slots_held"] == 0)
            await until(lambda: camera.pool.available == 4)
            frames.close()

    run(main())


def test_a_callback_that_keeps_nothing_frees_the_slot(
    ctx, shm_url, serve, monkeypatch
) -> None:
    from framerpc.aio import _shm as aio_shm

    monkeypatch.setattr(aio_shm, "_FLUSH_S", 60.0)  # no timer flush
    camera = serve(SignalCamera(ctx, shm_url))

    async def main() -> None:
        async with framerpc.aio.connect(
            SignalCameraAPI, camera.url, context=ctx
        ) as cam:
            seen: list[int] = []
            cam.frame_ready.connect(lambda frame, seq: seen.append(int(frame[0, 0])))
            for seq in range(3 * camera.pool.depth):  # more than its slots
                camera.emit_pool(seq)
                await until(lambda n=seq + 1: len(seen) == n)
                # sent after the callback returned, without the timer
                await until(lambda: camera.pool.available == camera.pool.depth)
            assert seen == list(range(3 * camera.pool.depth))
            await until(lambda: camera.stats["shm_signal_slots_held"] == 0)
            assert camera.stats["shm_signal_copies"] == 0

    run(main())


def test_the_off_switch_keeps_the_socket(ctx, shm_url, serve) -> None:
    camera = serve(SignalCamera(ctx, shm_url))

    async def main() -> None:
        async with framerpc.aio.connect(
            SignalCameraAPI, camera.url, context=ctx, options=options(shm=False)
        ) as cam:
            assert cam.signal_hub.shm is None
            frames = cam.frame_ready.subscribe()
            camera.emit_plain(2)
            frame, seq = await anext(frames)
            assert seq == 2 and np.all(frame == 2) and not in_shared_memory(frame)
            assert camera.stats["shm_signal_refs"] == 0
            frames.close()

    run(main())


def test_a_restarted_server_gets_the_subscription_claimed_again(
    ctx, tmp_path, serve
) -> None:
    url = f"ipc://{tmp_path}/cam.sock"
    first = serve(SignalCamera(ctx, url))

    async def main() -> None:
        async with framerpc.aio.connect(SignalCameraAPI, url, context=ctx) as cam:
            frames = cam.frame_ready.subscribe()
            assert first.stats["shm_signal_bound"] == 1
            await asyncio.to_thread(first.close)
            second = serve(bind_again(lambda: SignalCamera(ctx, url)))
            # a new handshake, the new subscriber id learned, claimed again
            await until(lambda: second.stats["shm_signal_bound"] == 1)
            second.emit_plain(3)
            frame, seq = await anext(frames)
            assert seq == 3 and frame.shape == SHAPE and np.all(frame == 3)
            assert in_shared_memory(frame)  # mapped again, not a frame
            stats = second.stats
            assert stats["shm_signal_refs"] == 1
            assert stats["shm_signal_fallbacks"] == 0
            del frame
            await until(lambda: second.stats["shm_signal_slots_held"] == 0)
            frames.close()

    run(main())
