"""The scenario of tests/test_stalled_listener.py, run in a child process
(libzmq aborts the whole process when it goes wrong).

``python stalled_listener_child.py KIND IVL_MS TIMEOUT_MS [COUNT]`` starts a
server emitting 100 KB signals and a client (KIND ``sync``: an RPCClient
proxy; ``aio``: an asyncio proxy) with those heartbeat options on both sides
(0 0: the defaults). The client's listener blocks until the client's
receive queue has been full for longer than the heartbeat bound, then
returns; the child then checks that a later emission still arrives, prints
``ok`` and exits 0. libzmq issue 3596 / 3937 made it abort instead
(``Assertion failed: _input_stopped``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import zmq
from dead_peer_device import heartbeat_options  # beside this script

from framerpc.aio import AsyncClient
from framerpc.aio._signals import AsyncSignal
from framerpc.client import RPCClient
from framerpc.server import RPCServer
from framerpc.signal import RPCSignal
from framerpc.transport import SocketOptions

PAYLOAD = 100_000  # bytes per emission
#: Bound (s) that only catches a hang.
HANG_S = 30.0


class Publisher(RPCServer):
    data = RPCSignal(bytes)
    mark = RPCSignal(int)


def _await_mark(
    server: Publisher, marks: list[int], arrived: threading.Event, n: int
) -> None:
    """Emit ``mark(n)`` until it arrives (the subscription is live)."""
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        server.mark.emit(n)
        if arrived.wait(0.05) and n in marks:
            return
        arrived.clear()
    raise SystemExit(f"mark {n} never arrived (got {marks[-5:]})")


def main(kind: str, ivl_ms: int, timeout_ms: int, count: int) -> None:
    opts = heartbeat_options(ivl_ms, timeout_ms)
    ctx = zmq.Context()
    server = Publisher(ctx, "tcp://127.0.0.1", options=opts)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        if kind == "aio":
            asyncio.run(_main_aio(ctx, server, opts, count))
        else:
            _main_sync(ctx, server, opts, count)
    finally:
        server.stop_server()
        serving.join(HANG_S)
        ctx.term()


def _flood_then_release(
    server: Publisher,
    opts: SocketOptions,
    count: int,
    blocked: threading.Event,
    release: threading.Event,
) -> None:
    """Emit ``count`` large signals while the listener blocks; keep the
    client's queue full past the heartbeat bound, then release it."""
    payload = b"x" * PAYLOAD
    for _ in range(count):
        server.data.emit(payload)
    if blocked.wait(HANG_S):
        time.sleep((opts.dead_peer_ms or 4000) / 1000 + 1.0)
    release.set()


def _main_sync(
    ctx: zmq.Context, server: Publisher, opts: SocketOptions, count: int
) -> None:
    client = RPCClient(ctx, server.url, options=opts)
    try:
        release = threading.Event()
        blocked = threading.Event()
        marks: list[int] = []
        arrived = threading.Event()
        got = [0]

        def on_data(payload: bytes) -> None:
            if got[0] == 0:
                blocked.set()
                release.wait(HANG_S)  # a slow GUI callback
            got[0] += 1

        def on_mark(n: int) -> None:
            marks.append(n)
            arrived.set()

        client._signals["data"].connect(on_data)
        client._signals["mark"].connect(on_mark)
        _await_mark(server, marks, arrived, 1)
        _flood_then_release(server, opts, count, blocked, release)
        if not blocked.is_set():
            raise SystemExit("the listener never ran")
        _await_mark(server, marks, arrived, 2)
        print(f"ok {got[0]}", flush=True)
    finally:
        client.close()


async def _main_aio(
    ctx: zmq.Context, server: Publisher, opts: SocketOptions, count: int
) -> None:
    """The same with an asyncio proxy: a blocking callback blocks the loop,
    so nothing reads the SUB socket."""
    client = await AsyncClient.open(server.url, context=ctx, options=opts)
    try:
        release = threading.Event()
        blocked = threading.Event()
        marks: list[int] = []
        got = [0]

        def on_data(payload: bytes) -> None:
            if got[0] == 0:
                blocked.set()
                release.wait(HANG_S)  # blocks the loop
            got[0] += 1

        AsyncSignal(client.signal_hub, "data").connect(on_data)
        AsyncSignal(client.signal_hub, "mark").connect(marks.append)
        await _await_mark_aio(server, marks, 1)
        flood = threading.Thread(
            target=_flood_then_release, args=(server, opts, count, blocked, release)
        )
        flood.start()
        try:
            await _await_mark_aio(server, marks, 2)
        finally:
            release.set()
            await asyncio.to_thread(flood.join, HANG_S)
        if not blocked.is_set():
            raise SystemExit("the listener never ran")
        print(f"ok {got[0]}", flush=True)
    finally:
        await client.aclose()


async def _await_mark_aio(server: Publisher, marks: list[int], n: int) -> None:
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        server.mark.emit(n)
        await asyncio.sleep(0.05)
        if n in marks:
            return
    raise SystemExit(f"mark {n} never arrived (got {marks[-5:]})")


if __name__ == "__main__":
    main(
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]) if len(sys.argv) > 4 else 2000,
    )
