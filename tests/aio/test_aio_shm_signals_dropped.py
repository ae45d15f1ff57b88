"""framerpc.aio: an asyncio proxy that closes its signal subscription and
stays connected sends the server its word on what it still holds (issue
14, ``server.shm_signals``; the sync client's case:
``test_shm_signals_dropped``): the references sent to the subscription
and never read come back, the arrays it holds keep their slots."""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np
from aio_helpers import run, until
from shm_helpers import in_shared_memory, needs_shm
from shm_signal_helpers import SignalCamera, SignalCameraAPI

import framerpc.aio
from framerpc import RPCServer
from framerpc.aio import _link, _shm_signals
from framerpc.client.shm_signals import _WORD_TRIES

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


class _GatedAPI(SignalCameraAPI):
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


def test_the_word_waits_for_a_turn_to_send(ctx, shm_url, serve) -> None:
    # the proxy's calls in flight at their bound (MAX_IN_FLIGHT, one here),
    # the one in flight longer than the proxy's timeout: the word waited
    # for a turn until that timeout and was dropped, and what was sent to
    # the subscription and never read stayed held until the proxy closed
    camera = serve(_GatedCamera(ctx, shm_url))
    timeout_ms = 300

    async def main() -> None:
        async with framerpc.aio.connect(
            _GatedAPI, camera.url, context=ctx, timeout=timeout_ms
        ) as cam:
            assert cam.signal_hub.shm is not None
            frames = cam.frame_ready.subscribe()
            camera.emit_pool(5)
            held = [await anext(frames)]
            assert in_shared_memory(held[0][0])
            cam._link._limit = 1
            call = asyncio.create_task(cam.wait_gate())
            try:
                await until(camera.entered.is_set)
                # sent now, never read: the loop does not run before the hub
                # stops reading (aclose stops it before its first await)
                for seq in (7, 8, 9):
                    camera.emit_plain(seq)
                assert camera.stats["shm_signal_slots_held"] == 4
                await cam.signal_hub.aclose()
                # no turn while the call runs, for longer than the timeout
                await asyncio.sleep(2 * timeout_ms / 1000)
                assert camera.stats["shm_signal_reclaimed"] == 0
            finally:
                camera.gate.set()
                assert await call == 2
            await until(lambda: camera.stats["shm_signal_reclaimed"] == 3)
            stats = camera.stats
            assert stats["shm_signal_slots_held"] == 1
            assert stats["shm_signal_bound"] == 0 and stats["shm_signal_bogus"] == 0
            cam._link._limit = _link.MAX_IN_FLIGHT
            assert await cam.ping() == 1  # the proxy is still connected
            assert np.all(held[0][0] == 5)
            del held
            await until(lambda: camera.stats["shm_signal_slots_held"] == 0)
            await until(lambda: camera.pool.available == camera.pool.depth)

    run(main())


def test_a_word_the_socket_cannot_send_is_tried_a_bounded_number_of_times(
    ctx, shm_url, serve, caplog
) -> None:
    # the server gone (its connection dropped): no send can go out, the
    # word is tried _WORD_TRIES times after its first try, then given up
    camera = serve(SignalCamera(ctx, shm_url))
    caplog.set_level(logging.DEBUG, logger="framerpc.aio._shm_signals")

    def lost(watch) -> bool:
        watch.drain()
        return watch.losses > 0 and not watch.up

    async def main() -> None:
        async with framerpc.aio.connect(
            SignalCameraAPI, camera.url, context=ctx, timeout=200
        ) as cam:
            assert cam.signal_hub.shm is not None
            await asyncio.to_thread(camera.close)
            await until(lambda: lost(cam._link.watch))
            await cam.signal_hub.aclose()
            await until(
                lambda: not [t for t in cam._tasks if "aio-shm-word" in t.get_name()]
            )

    run(main())
    said = [
        record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith("word on the signals")
    ]
    assert len(said) == 1 + _WORD_TRIES + 1  # the first try, again, given up
    assert said[-1].endswith(" not sent")
    assert not any(s.endswith(" not sent") for s in said[:-1])


def test_a_closed_signal_hub_is_never_claimed_again(
    ctx, shm_url, serve, caplog
) -> None:
    # a handshake again later (a restarted server) claims no subscription
    # for a hub closed alone: it sent handshake tokens to it, each waited
    # for 2 s and logged "not confirmed", 5 times (the sync receiver's
    # case: test_stopping_the_receiver_closes_the_subscription_alone)
    camera = serve(SignalCamera(ctx, shm_url))

    async def main() -> None:
        async with framerpc.aio.connect(
            SignalCameraAPI, camera.url, context=ctx
        ) as cam:
            hub = cam.signal_hub
            assert hub.shm is not None and hub.subscriber is not None
            await hub.aclose()
            await until(lambda: camera.stats["shm_signal_bound"] == 0)
            link = cam._shm
            link.retry.claim_again()  # as after a handshake again
            await until(lambda: link.retry.claims_due == 0)
            assert not await _shm_signals.claim(cam)
            assert await cam.ping() == 1
            stats = camera.stats
            assert stats["shm_signal_bound"] == 0 and stats["shm_signal_bogus"] == 0

    run(main())
    assert "not confirmed" not in caplog.text
