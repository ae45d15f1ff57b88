"""An asyncio client whose shared-memory handshake got no answer in time
tries again later from a task of its own (issue 14, framerpc.aio._shm and
framerpc.client.shm_retry), beside its calls; a final no is never asked
again."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aio_helpers import run, until
from conftest import wait_until
from devices import bind_again
from shm_helpers import ShmCamera, ShmCameraAPI, in_shared_memory, needs_shm
from shm_retry_helpers import (
    TIMEOUT_MS,
    hold_first_hello_until_given_up,
    say_no,
    serve_held,
)
from shm_signal_helpers import SignalCamera, SignalCameraAPI

import framerpc.aio
from framerpc.client import shm_retry

pytestmark = needs_shm


def test_a_client_whose_handshake_timed_out_ends_up_on_shared_memory(
    ctx, shm_url, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = ShmCamera(ctx, shm_url)
    release, hellos = serve_held(serve, camera, monkeypatch)

    async def main() -> None:
        async with framerpc.aio.connect(
            ShmCameraAPI, camera.url, context=ctx, timeout=TIMEOUT_MS
        ) as cam:
            release.set()  # the client has given up on its handshake
            link = cam._shm
            assert link is not None and not link.retry.accepted
            assert link._retrying is not None  # a task tries again
            frame, _ = await cam.plain(5)  # on the socket meanwhile
            assert np.all(frame == 5)
            await until(lambda: link.retry.accepted)
            assert hellos[0] >= 2 and cam._shm is link
            await until(lambda: link._retrying is None)  # its task ended
            frame, _ = await cam.grab_pool(3)
            assert in_shared_memory(frame) and np.all(frame == 3)
            assert camera.stats["shm_replies"] >= 1
            del frame

    run(main())  # no task left on the loop
    assert wait_until(lambda: not camera._shm.clients)  # goodbye


def test_a_final_no_after_a_timeout_is_never_asked_again(
    ctx, shm_url, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = ShmCamera(ctx, shm_url)
    release, hellos = serve_held(serve, camera, monkeypatch, answer=say_no)

    async def main() -> None:
        async with framerpc.aio.connect(
            ShmCameraAPI, camera.url, context=ctx, timeout=TIMEOUT_MS
        ) as cam:
            release.set()
            link = cam._shm
            assert link is not None
            await until(lambda: cam._shm is None)  # the retry heard no
            await until(lambda: link._retrying is None)  # its task ended
            asked = hellos[0]
            assert asked >= 2  # more when a retry timed out under load
            assert await cam.ping() == 1  # a call after: no new handshake
            frame, _ = await cam.plain(4)
            assert np.all(frame == 4) and not in_shared_memory(frame)
            assert hellos[0] == asked
            del frame

    run(main())


def test_closing_while_a_retry_waits_cancels_it(
    ctx, shm_url, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = ShmCamera(ctx, shm_url)
    # the retry is never due here
    release, _hellos = serve_held(serve, camera, monkeypatch, first_s=3600.0)

    async def main() -> None:
        cam = await framerpc.aio.connect(
            ShmCameraAPI, camera.url, context=ctx, timeout=TIMEOUT_MS
        )
        try:
            release.set()
            link = cam._shm
            assert link is not None
            task = link._retrying
            assert task is not None and not task.done()
        finally:
            await cam.aclose()
        assert task.cancelled()

    run(main())  # no task left on the loop


def test_a_late_yes_brings_the_signal_arrays_to_shared_memory_too(
    ctx, shm_url, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shm_retry, "FIRST_S", 0.05)
    camera = serve(SignalCamera(ctx, shm_url))
    hold_first_hello_until_given_up(camera)

    async def main() -> None:
        async with framerpc.aio.connect(
            SignalCameraAPI, camera.url, context=ctx, timeout=TIMEOUT_MS
        ) as cam:
            frames = cam.frame_ready.subscribe()
            assert not cam._shm.retry.accepted
            await until(lambda: camera.stats["shm_signal_bound"] == 1)
            camera.emit_plain(7)
            frame, seq = await anext(frames)
            assert seq == 7 and np.all(frame == 7) and in_shared_memory(frame)
            del frame

    run(main())


def test_a_restarted_server_busy_at_the_new_handshake_gets_it_claimed_too(
    ctx, tmp_path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry's own claim declines (it would name the old subscriber
    id): the claims of a yes again bind the new subscription."""
    monkeypatch.setattr(shm_retry, "FIRST_S", 0.05)
    url = f"ipc://{tmp_path}/cam.sock"
    first = serve(SignalCamera(ctx, url))

    async def main() -> None:
        async with framerpc.aio.connect(
            SignalCameraAPI, url, context=ctx, timeout=TIMEOUT_MS
        ) as cam:
            frames = cam.frame_ready.subscribe()
            assert first.stats["shm_signal_bound"] == 1
            await asyncio.to_thread(first.close)
            second = bind_again(lambda: SignalCamera(ctx, url))
            hold_first_hello_until_given_up(second)
            serve(second)
            await until(lambda: second.stats["shm_signal_bound"] == 1)
            await until(lambda: cam._shm.retry.claims_due == 0)  # bound: no more
            second.emit_plain(4)
            frame, seq = await anext(frames)
            assert seq == 4 and np.all(frame == 4) and in_shared_memory(frame)
            del frame
            frames.close()

    run(main())
