"""Who holds a shared-memory slot and until when (issue 14): releases that
name another client's slot or an old generation are ignored and counted; a
client killed with SIGKILL gets its slots reclaimed; a server killed with
SIGKILL leaves no segment after the next framerpc process starts."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
import zmq
from conftest import wait_until
from shm_helpers import (
    DEPTH,
    ShmCamera,
    ShmCameraProxy,
    child_process,
    in_shared_memory,
    needs_shm,
    options,
)

from framerpc import RPCClient
from framerpc.transport import shm as segments
from framerpc.wire import framing
from framerpc.wire import shm as wire_shm

pytestmark = needs_shm

_TESTS = os.path.dirname(os.path.abspath(__file__))
# a heartbeat bound of a minute: a client whose connection is gone keeps
# its slots that long after the server noticed (test_shm_frozen.py)
_PATIENT = options(heartbeat_ivl_ms=1000, heartbeat_timeout_ms=59000)


def _send_release(proxy: RPCClient, value: list) -> None:
    """Send a raw SHM_RELEASE on ``proxy``'s socket, then a call behind it
    on that socket (not the same-host lane, which may overtake it): once
    the call returns, the server has handled the release."""
    frames = wire_shm.encode_release([])
    header = framing.decode(frames)
    header["x"] = value
    with proxy._lock:
        proxy.socket.send_multipart([b"", *framing.encode(header)])
        lane, proxy._channel.lane = proxy._channel.lane, None
    try:
        assert proxy.ping() == 1
    finally:
        proxy._channel.lane = lane


def test_a_release_cannot_free_another_clients_slot(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    with (
        ShmCameraProxy(ctx, camera.url) as owner,
        ShmCameraProxy(ctx, camera.url) as hostile,
    ):
        frame, _ = owner.grab_pool(7)
        slot, generation = frame.base._slot
        _send_release(
            hostile,
            [[slot, generation], [slot, generation + 1], [99, 1], "junk", [1]],
        )
        stats = camera.stats
        assert stats["shm_bogus_releases"] == 5
        assert stats["shm_slots_held"] == 1
        assert camera.pool.available == DEPTH - 1
        # the owner itself naming an old generation frees nothing either
        _send_release(owner, [[slot, generation - 1]])
        assert camera.stats["shm_bogus_releases"] == 6
        assert camera.stats["shm_slots_held"] == 1
        assert np.all(frame == 7)
        del frame
        assert wait_until(lambda: camera.pool.available == DEPTH)
        assert camera.stats["shm_bogus_releases"] == 6


def test_a_closed_client_says_goodbye_unless_it_holds_arrays(
    ctx, shm_url, serve
) -> None:
    camera = serve(ShmCamera(ctx, shm_url, options=_PATIENT))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        frame, _ = proxy.plain(1)
        del frame
    assert wait_until(lambda: not camera._shm.clients)
    assert camera.stats["shm_slots_held"] == 0
    with ShmCameraProxy(ctx, camera.url) as proxy:
        kept, _ = proxy.plain(2)
    assert len(camera._shm.clients) == 1
    with ShmCameraProxy(ctx, camera.url) as other:  # served in order after it
        assert other.ping() == 1
    # the closed client's array stays the server's to protect (for a
    # heartbeat bound after its lost connection is noticed)
    assert camera.stats["shm_slots_held"] == 1 and np.all(kept == 2)
    del kept


def test_a_reconnected_client_keeps_its_slots(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url, options=_PATIENT))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        frame, _ = proxy.grab_pool(5)
        # a new connection has a new routing id (as after a network cut)
        with proxy._lock:
            proxy.socket.disconnect(camera.url)
            proxy.socket.connect(camera.url)
        # what the watchers do on a reconnection (a request sent while the
        # old connection was closing may be lost: they try again)
        assert wait_until(lambda: proxy._reload_inventory() is not None)
        assert len(camera._shm.clients) == 1  # moved, not added
        assert np.all(frame == 5)
        del frame
        assert proxy.ping() == 1
        assert wait_until(lambda: camera.stats["shm_slots_held"] == 0)
        assert camera.stats["shm_bogus_releases"] == 0
        again, _ = proxy.grab_pool(6)
        assert in_shared_memory(again) and np.all(again == 6)
        del again


_CLIENT = """
import sys, time, zmq
from framerpc import RPCClient
ctx = zmq.Context()
client = RPCClient(ctx, sys.argv[1], timeout=20000)
held = [client.execute("grab_pool", {"args": [i]})[1][0] for i in range(2)]
print("held" if client._shm is not None else "no shared memory", flush=True)
time.sleep(60)
"""


def test_a_client_killed_with_sigkill_gets_its_slots_reclaimed(
    ctx, shm_url, serve
) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    with child_process(_CLIENT, camera.url) as child:
        assert child.stdout.readline().strip() == "held"
        assert camera.stats["shm_slots_held"] == 2
        assert camera.pool.available == DEPTH - 2
    assert wait_until(lambda: camera.stats["shm_reclaimed"] == 2)
    assert camera.stats["shm_slots_held"] == 0
    assert wait_until(lambda: camera.pool.available == DEPTH)
    # the server still serves others through shared memory
    with ShmCameraProxy(ctx, camera.url) as proxy:
        frame, _ = proxy.plain(3)
        assert in_shared_memory(frame) and np.all(frame == 3)
        del frame


def test_a_busy_server_reclaims_the_slots_of_a_killed_client(
    ctx, shm_url, serve
) -> None:
    # another client's calls keep the serve loop from ever idling: it
    # still checks its shared-memory clients every few messages
    camera = serve(ShmCamera(ctx, shm_url))
    stop, calls = threading.Event(), [0]

    def keep_busy() -> None:
        with ShmCameraProxy(ctx, camera.url) as proxy:
            while not stop.is_set():
                assert proxy.ping() == 1
                calls[0] += 1

    busy = threading.Thread(target=keep_busy)
    with child_process(_CLIENT, camera.url) as child:
        try:
            assert child.stdout.readline().strip() == "held"
            busy.start()
            assert wait_until(lambda: calls[0] > 0)
            child.send_signal(signal.SIGKILL)
            child.wait(20)
            assert wait_until(lambda: camera.stats["shm_reclaimed"] == 2)
            assert wait_until(lambda: camera.pool.available == DEPTH)
        finally:
            stop.set()
            if busy.is_alive():
                busy.join(20)
    assert calls[0] > 0


_SERVER = """
import sys, time, zmq
sys.path.insert(0, sys.argv[2])
from shm_helpers import ShmCamera
camera = ShmCamera(zmq.Context(), sys.argv[1])
camera.start()
print(camera.url, flush=True)
time.sleep(60)
"""


def test_a_server_killed_with_sigkill_leaves_no_segment_after_the_next_start(
    ctx, tmp_path, monkeypatch
) -> None:
    with child_process(_SERVER, f"ipc://{tmp_path}/killed.sock", _TESTS) as child:
        url = child.stdout.readline().strip()
        with ShmCameraProxy(ctx, url) as proxy:
            pooled, info = proxy.grab_pool(1)
            plain, _ = proxy.plain(2)
            names = {info["segment"], plain.base._map.name}
            assert in_shared_memory(pooled) and in_shared_memory(plain)
            assert len(names) == 2
            assert all(os.path.exists(f"/dev/shm/{name}") for name in names)
            child.send_signal(signal.SIGKILL)
            child.wait(20)
            # what the client holds stays readable: its mapping lives on
            assert np.all(pooled == 1) and np.all(plain == 2)
            del pooled, plain
    # No check that both are still there: any framerpc process of this user
    # sweeps them, and a parallel test worker's server did so first once
    # (the suite under load); what must hold is that none is left after
    # the next framerpc process's first segment:
    monkeypatch.setattr(segments, "_stale_done", False)
    segments.Segment(1).close()
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in names)


@pytest.mark.parametrize("count", [1, wire_shm.MAX_RELEASES + 5])
def test_many_releases_go_out_in_batches(ctx, shm_url, serve, count) -> None:
    camera = serve(ShmCamera(ctx, shm_url))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        assert proxy._shm is not None
        with proxy._lock:
            proxy._shm.pending.extend((10_000 + i, 1) for i in range(count))
            proxy._shm.flush(proxy.socket)
        assert not proxy._shm.pending
        assert proxy.ping() == 1
        assert camera.stats["shm_bogus_releases"] == count


def test_a_context_terminated_under_a_held_frame_is_no_crash(tmp_path) -> None:
    context = zmq.Context()
    camera = ShmCamera(context, f"ipc://{tmp_path}/term.sock")
    camera.start()
    proxy = ShmCameraProxy(context, camera.url)
    frame, _ = proxy.plain(4)
    proxy.close()
    camera.close()
    context.term()
    assert np.all(frame == 4)  # still mapped in the client
