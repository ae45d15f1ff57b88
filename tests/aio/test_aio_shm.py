"""framerpc.aio: same-host buffer replies through shared memory (issues 14
and 16), over ipc:// and tcp 127.0.0.1, in the live engine.

The asyncio client shakes hands at connect as the sync client does; its
arrays lie in the server's segments, read-only and correct; a collected
array's slot goes back with the next call or from a loop timer; the off
switch, an older server and inproc:// keep the socket; a closed client
says goodbye and leaves nothing; a restarted server gets a new handshake.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import pytest
import zmq
from aio_helpers import run, until
from devices import bind_again
from shm_helpers import (
    DTYPE,
    SHAPE,
    ShmCamera,
    ShmCameraAPI,
    in_shared_memory,
    needs_shm,
    options,
)

import framerpc.aio
from framerpc import RPCServer
from framerpc.aio import _shm as aio_shm
from framerpc.errors import ProtocolError
from framerpc.rpc import requests
from framerpc.transport import shm as segments

pytestmark = needs_shm


def _ours() -> set[str]:
    """The segments of /dev/shm this process made (server's and client's)."""
    prefix = f"framerpc-{os.getuid()}-{os.getpid()}-"
    return {name for name in os.listdir(segments.SHM_DIR) if name.startswith(prefix)}


def test_arrays_come_through_shared_memory_and_are_correct(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url))

    async def main() -> None:
        async with framerpc.aio.connect(ShmCameraAPI, camera.url, context=ctx) as cam:
            assert cam._shm is not None
            # a pool frame: no copy, the client's array is the slot's memory
            frame, info = await cam.grab_pool(7)
            assert in_shared_memory(frame) and np.all(frame == 7)
            assert frame.shape == (512, 1024) and frame.dtype == np.uint16
            assert not frame.flags.writeable
            mapped = cam._shm.cache.get(info["segment"])
            assert frame.ctypes.data == mapped.address + info["offset"]
            with pytest.raises(ValueError):
                frame[0, 0] = 1
            # a plain array: copied once, not changed by the next refill
            plain, _ = await cam.plain(3)
            again, _ = await cam.plain(4)
            assert in_shared_memory(plain) and np.all(plain == 3)
            assert in_shared_memory(again) and np.all(again == 4)
            # the untyped calls resolve references too
            called, _ = await cam.call("plain", 5)
            ok, (executed, _) = await cam.execute("plain", {"args": [6]})
            assert ok and np.all(executed == 6) and in_shared_memory(executed)
            assert in_shared_memory(called) and np.all(called == 5)
            small, _ = await cam.small()
            assert small.tolist() == list(range(16)) and not in_shared_memory(small)
            assert camera.stats["shm_replies"] == 5
            del frame, plain, again, called, executed

    run(main())


def test_a_collected_array_frees_the_servers_slot_from_the_loop_timer(
    ctx, shm_url, serve
) -> None:
    camera = serve(ShmCamera(ctx, shm_url))

    async def main() -> None:
        async with framerpc.aio.connect(ShmCameraAPI, camera.url, context=ctx) as cam:
            first, _ = await cam.grab_pool(1)
            second, _ = await cam.grab_pool(2)
            assert camera.stats["shm_slots_held"] == 2
            view = second[10:20]
            del first
            # no call: the loop timer sends the release
            await until(lambda: camera.stats["shm_slots_held"] == 1)
            del second  # its view still holds the slot
            assert np.all(view == 2)
            assert camera.stats["shm_slots_held"] == 1
            del view
            await until(lambda: camera.stats["shm_slots_held"] == 0)
            assert camera.pool.available == camera.pool.depth
            assert camera.stats["shm_bogus_releases"] == 0

    run(main())


def test_releases_go_with_the_next_call(ctx, shm_url, serve, monkeypatch) -> None:
    monkeypatch.setattr(aio_shm, "_FLUSH_S", 3600.0)  # the timer never fires
    camera = serve(ShmCamera(ctx, shm_url))

    async def main() -> None:
        async with framerpc.aio.connect(ShmCameraAPI, camera.url, context=ctx) as cam:
            frames = [(await cam.grab_pool(i))[0] for i in range(3)]
            assert camera.stats["shm_slots_held"] == 3
            del frames
            assert len(cam._shm.pending) == 3
            # the call's header carries them: handled before its reply
            assert await cam.ping() == 1
            assert not cam._shm.pending
            assert camera.stats["shm_slots_held"] == 0
            frame, _ = await cam.grab_pool(9)
            del frame
            ok, _ = await cam.execute("ping", {})  # the untyped path too
            assert ok and camera.stats["shm_slots_held"] == 0

    run(main())


def test_a_call_never_sent_keeps_the_queued_releases(
    ctx, shm_url, serve, monkeypatch
) -> None:
    monkeypatch.setattr(aio_shm, "_FLUSH_S", 3600.0)  # the timer never fires
    camera = serve(ShmCamera(ctx, shm_url))

    async def main() -> None:
        async with framerpc.aio.connect(ShmCameraAPI, camera.url, context=ctx) as cam:
            frame, _ = await cam.plain(1)
            del frame
            assert len(cam._shm.pending) == 1
            with pytest.raises(TypeError):
                await cam.plain(object())  # msgpack refuses it: nothing sent
            assert len(cam._shm.pending) == 1
            # a call cancelled while it waits for its turn (the in-flight
            # bound reached): its request, with the releases, never left
            cam._link._limit = 0
            waiting = asyncio.create_task(cam.ping())
            await until(lambda: cam._link._slot_waiters)
            assert not cam._shm.pending  # taken by the waiting call
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert len(cam._shm.pending) == 1
            cam._link._limit = 10_000
            assert await cam.ping() == 1
            assert camera.stats["shm_slots_held"] == 0

    run(main())


@pytest.mark.parametrize("side", ["client", "server"])
def test_the_off_switch_keeps_todays_frames(ctx, shm_url, serve, side) -> None:
    off = options(shm=False)
    camera = serve(
        ShmCamera(ctx, shm_url, **({"options": off} if side == "server" else {}))
    )
    kwargs: dict[str, Any] = {"options": off} if side == "client" else {}

    async def main() -> None:
        async with framerpc.aio.connect(
            ShmCameraAPI, camera.url, context=ctx, **kwargs
        ) as cam:
            assert cam._shm is None
            frame, _ = await cam.grab_pool(4)
            assert np.all(frame == 4) and not in_shared_memory(frame)
            assert camera.stats["shm_replies"] == 0
            del frame

    run(main())


def test_an_older_server_and_inproc_keep_the_socket(
    ctx, shm_url, serve, monkeypatch
) -> None:
    # what a server without shared memory does with SHM_HELLO
    parse = requests.request_from_header

    def older_server_parse(header: dict) -> Any:
        if header.get("e") == "SHM_HELLO":
            raise ProtocolError("unknown event 'SHM_HELLO' for a request")
        return parse(header)

    older = serve(ShmCamera(ctx, shm_url))
    inproc = serve(ShmCamera(ctx, "inproc://aio-shm-camera"))

    async def main() -> None:
        monkeypatch.setattr(requests, "request_from_header", older_server_parse)
        async with framerpc.aio.connect(ShmCameraAPI, older.url, context=ctx) as cam:
            assert cam._shm is None
            frame, _ = await cam.plain(6)
            assert np.all(frame == 6) and not in_shared_memory(frame)
        monkeypatch.undo()
        async with framerpc.aio.connect(ShmCameraAPI, inproc.url, context=ctx) as cam:
            assert cam._shm is None
            frame, _ = await cam.plain(2)
            assert np.all(frame == 2) and not in_shared_memory(frame)
        assert older.stats["shm_replies"] == inproc.stats["shm_replies"] == 0

    run(main())


def test_a_closed_client_says_goodbye_and_leaves_nothing(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    before = _ours()  # the server's pool segment

    async def main() -> None:
        cam = await framerpc.aio.connect(ShmCameraAPI, camera.url, context=ctx)
        shm = cam._shm
        assert shm is not None and len(camera._shm.clients) == 1
        frame, _ = await cam.grab_pool(3)
        assert in_shared_memory(frame) and shm._timer is not None
        del frame
        await cam.aclose()
        assert cam._shm is None and shm._timer is None
        # the queued release and the goodbye: the server forgets the client
        await until(lambda: not camera._shm.clients)
        assert camera.stats["shm_slots_held"] == 0
        assert camera.pool.available == camera.pool.depth
        assert camera.stats["shm_bogus_releases"] == 0

    run(main())  # no task left on the loop; ctx's term(): no socket left
    assert _ours() <= before  # the probe segment is gone


def test_a_restarted_server_gets_a_new_handshake(ctx, shm_url, serve) -> None:
    first = serve(ShmCamera(ctx, shm_url))
    url = first.url

    async def main() -> None:
        async with framerpc.aio.connect(ShmCameraAPI, url, context=ctx) as cam:
            kept, _ = await cam.grab_pool(1)
            assert in_shared_memory(kept)
            await asyncio.to_thread(first.close)
            second = serve(bind_again(lambda: ShmCamera(ctx, url)))
            # the client follows the restart and shakes hands again
            await until(lambda: len(second._shm.clients) == 1)
            frame, _ = await cam.grab_pool(2)
            assert in_shared_memory(frame) and np.all(frame == 2)
            assert np.all(kept == 1)  # the old mapping lives on
            del frame, kept
            await until(lambda: second.stats["shm_slots_held"] == 0)

    run(main())


class _FreshAPI(ShmCameraAPI):
    def fresh(self, seq: int) -> tuple:
        raise NotImplementedError


class _FreshCamera(_FreshAPI, ShmCamera):
    """``fresh``: a new array per call (``plain`` refills one array, which
    tears over the socket: the torn-frame rule)."""

    @RPCServer.register_method_buffer(timeout=20000)
    def fresh(self, seq: int) -> tuple:
        return np.full(SHAPE, seq, DTYPE), {"seq": seq}


def test_many_concurrent_calls_get_their_own_arrays(ctx, shm_url, serve) -> None:
    """More calls in flight than a client may hold slots (16): the rest come
    over the socket; every array is its own call's, every slot comes back."""
    camera = serve(_FreshCamera(ctx, shm_url))

    async def main() -> None:
        async with framerpc.aio.connect(_FreshAPI, camera.url, context=ctx) as cam:
            replies = await asyncio.gather(*(cam.fresh(i) for i in range(24)))
            through = [in_shared_memory(frame) for frame, _ in replies]
            assert 0 < sum(through) <= options().shm_max_slots
            for i, (frame, info) in enumerate(replies):
                assert info["seq"] == i and np.all(frame == i)
            del replies
            await until(lambda: camera.stats["shm_slots_held"] == 0)
            assert camera.stats["shm_bogus_releases"] == 0

    run(main())


def test_a_destroyed_context_under_a_held_frame_stops_the_timer(
    shm_url, ctx, serve
) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    client_ctx = zmq.Context()

    async def main() -> None:
        cam = await framerpc.aio.connect(ShmCameraAPI, camera.url, context=client_ctx)
        shm = cam._shm
        frame, _ = await cam.grab_pool(8)
        assert shm is not None and shm._timer is not None
        client_ctx.destroy(linger=0)  # term() would hang on a live socket
        assert cam._shm is None and shm._timer is None
        assert np.all(frame == 8)  # the mapping lives on with the array
        del frame
        await cam.aclose()  # still fine after

    run(main())
