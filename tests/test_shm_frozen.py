"""Slots of clients whose process lives but whose connection is gone
(issue 14): a frozen client (SIGSTOP: its heartbeats stop) and a client
closed while it holds arrays get their slots reclaimed; a live client that
holds frames without calling keeps them. The server probes the clients
holding slots (framerpc.server.shm_frames, wire.shm.encode_probe)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading

import numpy as np
from conftest import wait_until
from shm_helpers import DEPTH, ShmCamera, ShmCameraProxy, needs_shm, options

pytestmark = needs_shm

# short heartbeats: a frozen client's connection drops within ~1.5 s (the
# reclaim then waits one such bound more); a live client's libzmq I/O
# thread answers every PING, however long it does not call
_FAST = options(heartbeat_ivl_ms=250, heartbeat_timeout_ms=1250)

# a client process holding two pool frames; each line on its stdin makes
# it check them, drop them and call again (its stale probes are dropped)
_CLIENT = """
import sys, zmq
from framerpc import RPCClient
ctx = zmq.Context()
client = RPCClient(ctx, sys.argv[1], timeout=20000)
held = [client.execute("grab_pool", {"args": [i]})[1][0] for i in range(2)]
print("held" if client._shm is not None else "no shared memory", flush=True)
for line in sys.stdin:
    ok = all(bool((frame == i).all()) for i, frame in enumerate(held))
    del held[:]
    print(ok, client.execute("ping", {})[1], flush=True)
"""


def _start_client(url: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", _CLIENT, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "held"
    return child


def _end(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)  # also ends a stopped process
        child.wait(20)
    child.stdin.close()
    child.stdout.close()


def test_a_frozen_client_gets_its_slots_reclaimed(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url, options=_FAST))
    child = _start_client(camera.url)
    try:
        assert camera.stats["shm_slots_held"] == 2
        assert camera.pool.available == DEPTH - 2
        child.send_signal(signal.SIGSTOP)
        # the process lives: only its lost connection can free the slots
        assert wait_until(lambda: camera.stats["shm_reclaimed"] == 2, 30)
        assert child.poll() is None
        assert camera.stats["shm_slots_held"] == 0
        assert wait_until(lambda: camera.pool.available == DEPTH)
        assert not camera._shm.clients
        # the server goes on serving others through shared memory
        with ShmCameraProxy(ctx, camera.url) as proxy:
            frame, _ = proxy.grab_pool(9)
            assert camera.stats["shm_slots_held"] == 1 and np.all(frame == 9)
            del frame
    finally:
        _end(child)


def test_a_live_idle_client_keeps_its_slots(ctx, shm_url, serve) -> None:
    camera = serve(ShmCamera(ctx, shm_url, options=_FAST))
    child = _start_client(camera.url)
    try:
        shm = camera._shm
        first = shm.probes
        # sweeps (one probe each) are at least 1 s apart: 5 span more
        # than a heartbeat bound plus the grace after it
        assert wait_until(lambda: shm.probes >= first + 5, 30)
        assert camera.stats["shm_reclaimed"] == 0
        assert camera.stats["shm_slots_held"] == 2
        assert all(client.lost_at is None for client in shm.clients.values())
        child.stdin.write("check\n")
        child.stdin.flush()
        # its frames were never refilled, and its calls ignore the probes
        assert child.stdout.readline().split() == ["True", "1"]
        assert wait_until(lambda: camera.stats["shm_slots_held"] == 0)
        assert camera.stats["shm_reclaimed"] == 0
        assert camera.stats["shm_bogus_releases"] == 0
        assert camera.pool.available == DEPTH
    finally:
        _end(child)


def test_a_client_closed_while_holding_arrays_gives_its_slots_back(
    ctx, shm_url, serve
) -> None:
    camera = serve(ShmCamera(ctx, shm_url, options=_FAST))
    with ShmCameraProxy(ctx, camera.url) as proxy:
        kept, _ = proxy.grab_pool(3)
    # no goodbye (it holds an array): its closed connection tells instead
    assert wait_until(lambda: camera.stats["shm_reclaimed"] == 1, 30)
    assert camera.stats["shm_slots_held"] == 0 and not camera._shm.clients
    assert wait_until(lambda: camera.pool.available == DEPTH)
    assert kept.shape == (512, 1024)  # still mapped in the client
    del kept


def test_a_server_in_an_event_loop_reclaims_a_closed_holders_slots(
    ctx, shm_url
) -> None:
    # ``await server.serve()`` sweeps from its own timekeeping, not only
    # when it sends a buffer reply: here no call comes after the close
    camera = ShmCamera(ctx, shm_url, options=_FAST)
    thread = threading.Thread(target=lambda: asyncio.run(camera.serve()))
    thread.start()
    try:
        with ShmCameraProxy(ctx, camera.url) as proxy:
            kept, _ = proxy.grab_pool(4)
        assert wait_until(lambda: camera.stats["shm_reclaimed"] == 1, 30)
        assert wait_until(lambda: camera.pool.available == DEPTH)
        del kept
    finally:
        camera.stop_server()
        thread.join(20)
        assert not thread.is_alive()
