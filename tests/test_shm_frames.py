"""Same-host buffer replies through shared memory (issue 14), over ipc:// and
tcp 127.0.0.1, in the live engine: pool frames without a copy, plain arrays
copied once, small ones and off switches over the socket, older peers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import wait_until
from frame_pool_helpers import fetch_while_refilling
from shm_helpers import (
    DEPTH,
    ShmCamera,
    ShmCameraProxy,
    in_shared_memory,
    needs_shm,
    options,
)

from framerpc.errors import ProtocolError
from framerpc.rpc import requests

pytestmark = needs_shm


def test_a_pool_frame_arrives_without_a_copy(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        assert proxy._shm is not None
        frame, info = proxy.grab_pool(3)
        assert frame.shape == camera.pool.shape and frame.dtype == camera.pool.dtype
        assert np.all(frame == 3)
        assert not frame.flags.writeable
        with pytest.raises(ValueError):
            frame[0, 0] = 1
        # the client's memory is the pool's slot: same segment, same offset
        assert in_shared_memory(frame)
        mapping = frame.base._map
        assert mapping.name == info["segment"]
        address = frame.__array_interface__["data"][0]
        assert address - mapping.address == info["offset"]
        assert address + frame.nbytes <= mapping.address + mapping.size
        stats = camera.stats
        assert stats["shm_replies"] == 1 and stats["shm_copies"] == 0
        assert camera.pool.available == DEPTH - 1  # held for the client
        del frame


def test_a_plain_array_is_copied_once_and_never_changes_under_the_client(
    ctx, shm_url, serve
) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        first, _ = proxy.plain(1)
        second, _ = proxy.plain(2)  # the server refilled the same array
        assert in_shared_memory(first) and in_shared_memory(second)
        assert np.all(first == 1) and np.all(second == 2)
        assert first.base._map.name != second.base._map.name
        assert camera.stats["shm_copies"] == 2
        del first, second


def test_a_dropped_array_gives_its_slot_back_without_another_call(
    ctx, shm_url, serve
) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        frame, _ = proxy.grab_pool(1)
        view = frame[10:20]  # a view keeps the slot too
        del frame
        plain, _ = proxy.plain(5)
        assert camera.stats["shm_slots_held"] == 2
        del plain
        # the timer thread sends the release: no further call is needed
        assert wait_until(lambda: camera.stats["shm_slots_held"] == 1)
        assert camera.pool.available == DEPTH - 1
        assert np.all(view == 1)
        del view
        assert wait_until(lambda: camera.stats["shm_slots_held"] == 0)
        assert wait_until(lambda: camera.pool.available == DEPTH)


def test_releases_go_with_the_next_call(ctx, shm_url, serve, monkeypatch) -> None:
    from framerpc.client import shm as client_shm

    monkeypatch.setattr(client_shm, "_FLUSH_S", 60.0)  # no timer flush
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        for seq in range(3 * DEPTH):  # more fetches than slots
            frame, _ = proxy.grab_pool(seq)
            assert np.all(frame == seq) and in_shared_memory(frame)
            del frame
        assert proxy.ping() == 1
        assert camera.stats["shm_slots_held"] == 0
        assert camera.stats["shm_fallbacks"] == 0


def test_a_client_holding_frames_never_starves_the_pool(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        held = [proxy.grab_pool(seq) for seq in range(DEPTH + 3)]  # > depth
        assert all(np.all(frame == info["seq"]) for frame, info in held)
        assert all(in_shared_memory(frame) for frame, _ in held)
        # references for half the pool (a client's share), copies after
        stats = camera.stats
        assert stats["shm_replies"] == DEPTH + 3
        assert stats["shm_copies"] == DEPTH + 3 - DEPTH // 2
        # the copied frames' slots came back (once the server let go)
        assert wait_until(lambda: camera.pool.available == DEPTH - DEPTH // 2)
        del held


def test_a_call_that_cannot_be_sent_keeps_the_queued_releases(
    ctx, shm_url, serve, monkeypatch
) -> None:
    from framerpc.client import shm as client_shm

    monkeypatch.setattr(client_shm, "_FLUSH_S", 60.0)  # no timer flush
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        frame, _ = proxy.plain(1)
        del frame
        assert len(proxy._shm.pending) == 1
        with pytest.raises(TypeError):
            proxy.plain(object())  # msgpack refuses it: nothing is sent
        assert len(proxy._shm.pending) == 1
        assert proxy.ping() == 1
        assert camera.stats["shm_slots_held"] == 0


class _Unsent:
    """A proxy's channel whose next request is not sent in time (as when
    the connection is down: ``Channel._send``'s error), then the real one."""

    def __init__(self, channel: object) -> None:
        self.real = channel
        self.refused = 0

    def request(self, frames: list, request_id: int, timeout: int | None) -> object:
        if not self.refused:
            self.refused += 1
            raise TimeoutError("no send to the server in time")
        return self.real.request(frames, request_id, timeout)  # type: ignore[attr-defined]


def test_a_call_not_sent_in_time_keeps_the_queued_releases(
    ctx, shm_url, serve, monkeypatch
) -> None:
    # the releases that ride in a call whose request never went out were
    # lost: their slots stayed held until the client ended
    from framerpc.client import shm as client_shm

    monkeypatch.setattr(client_shm, "_FLUSH_S", 60.0)  # no timer flush
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        frame, _ = proxy.plain(1)
        del frame
        assert len(proxy._shm.pending) == 1
        channel = proxy._channel
        proxy._channel = unsent = _Unsent(channel)
        try:
            with pytest.raises(TimeoutError, match="not connected"):
                proxy.plain(2)
        finally:
            proxy._channel = channel
        assert unsent.refused == 1
        assert len(proxy._shm.pending) == 1
        assert camera.stats["shm_slots_held"] == 1
        assert proxy.ping() == 1
        assert camera.stats["shm_slots_held"] == 0
        assert camera.stats["shm_bogus_releases"] == 0


def test_too_many_slots_held_falls_back_to_the_socket(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url, options=options(shm_max_slots=2)))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        held = [proxy.plain(seq)[0] for seq in range(3)]
        assert [in_shared_memory(a) for a in held] == [True, True, False]
        assert all(np.all(a == seq) for seq, a in enumerate(held))
        assert camera.stats["shm_fallbacks"] == 1
        del held


def test_a_full_arena_falls_back_to_the_socket(ctx, shm_url, serve) -> None:
    nbytes = ShmCamera.__init__.__globals__["SHAPE"][0] * 1024 * 2
    camera = serve(ShmCamera(ctx, shm_url, options=options(shm_max_bytes=nbytes)))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        first, _ = proxy.plain(1)
        second, _ = proxy.plain(2)  # the arena holds one frame only
        assert in_shared_memory(first) and not in_shared_memory(second)
        assert np.all(first == 1) and np.all(second == 2)
        assert camera.stats["shm_fallbacks"] == 1
        del first
        # the freed segment is reused, no new one needed
        assert wait_until(lambda: camera.stats["shm_slots_held"] == 0)
        third, _ = proxy.plain(3)
        assert in_shared_memory(third) and np.all(third == 3)
        del second, third


def test_small_arrays_and_bytes_travel_over_the_socket(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        small, _ = proxy.small()
        assert small.tolist() == list(range(16)) and not in_shared_memory(small)
        assert camera.stats["shm_replies"] == 0


@pytest.mark.parametrize("side", ["client", "server"])
def test_the_off_switch_keeps_todays_frames(ctx, shm_url, serve, side) -> None:
    off = options(shm=False)
    camera = serve(
        ShmCamera(ctx, shm_url, **({"options": off} if side == "server" else {}))
    )
    kwargs = {"options": off} if side == "client" else {}
    with ShmCameraProxy(ctx, camera.url, **kwargs) as proxy:
        assert proxy._shm is None
        frame, _ = proxy.grab_pool(4)
        assert np.all(frame == 4) and not in_shared_memory(frame)
        assert camera.stats["shm_replies"] == 0
        del frame


def test_an_older_server_answers_unknown_event_and_the_client_uses_the_socket(
    ctx, shm_url, serve, monkeypatch
) -> None:
    # what a server without shared memory does with SHM_HELLO (server side
    # only: the client in this process still builds its request)
    parse = requests.request_from_header

    def older_server_parse(header: dict) -> Any:
        if header.get("e") == "SHM_HELLO":
            raise ProtocolError("unknown event 'SHM_HELLO' for a request")
        return parse(header)

    monkeypatch.setattr(requests, "request_from_header", older_server_parse)
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        assert proxy._shm is None
        frame, _ = proxy.plain(6)
        assert np.all(frame == 6) and not in_shared_memory(frame)
        del frame


def test_an_inproc_client_does_not_shake_hands(ctx, serve) -> None:
    camera = serve(ShmCamera(ctx, "inproc://shm-camera"))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        assert proxy._shm is None
        frame, _ = proxy.plain(2)
        assert np.all(frame == 2)
        assert camera.stats["shm_replies"] == 0
        del frame


def test_pool_frames_are_never_torn_through_shared_memory(ctx, shm_url, serve) -> None:
    """A writer refills the pool as fast as it can while three clients
    fetch the latest frame; each frame holds its sequence number, also
    when checked again one fetch later, and lies in shared memory."""
    camera = serve(ShmCamera(ctx, shm_url))
    seen = fetch_while_refilling(
        camera.pool,
        camera.publish,
        lambda: ShmCameraProxy(ctx, camera.url, timeout=20000),
        "latest",
        count=40,
        wrap=60000,  # uint16 frames
        on_frame=lambda frame: (
            None if in_shared_memory(frame) else "a frame came over the socket"
        ),
    )
    assert not seen.bad, seen.bad[:5]
    assert len(seen.fetched) == 120
    assert seen.written > 2 * DEPTH  # slots were reused while clients fetched
    stats = camera.stats
    assert stats["shm_replies"] == 120
    # most went without a copy (a copy when the pool had no slot left)
    assert stats["shm_copies"] < stats["shm_replies"]
