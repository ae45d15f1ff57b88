"""framerpc.aio: a blocked event loop does not lose the link, and a client
keeps at most ``MAX_IN_FLIGHT`` calls in flight.

With 400 calls in flight and the loop blocked past the heartbeat bound,
the replies filled the request socket's receive queue (RCVHWM 100):
libzmq stopped reading the connection, so the heartbeat PONGs went
unread too, and the link fell to its own heartbeat timeout (the calls
failed with ``PeerLostError``, or libzmq aborted the process on the
reconnect: zeromq/libzmq#3596, as for the SUB in 7094e2e). The queue
now holds a reply for every call in flight, and calls beyond that many
wait for a slot.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
from aio_helpers import until
from devices import Camera

import framerpc.aio
from framerpc.aio import _link

#: Ceiling (s) of a test's coroutine and of its waits: only catches a hang.
HANG_S = 30
CHILD = Path(__file__).with_name("blocked_loop_child.py")


def test_loop_blocked_past_the_heartbeat_bound_keeps_the_link() -> None:
    """1,000 calls without timeout, the loop blocked for 1.5 s (the link's
    heartbeat gives up after 0.4 s of silence): all answered, link up.
    In a child process: libzmq aborted the process on the reconnect."""
    done = subprocess.run(
        [sys.executable, str(CHILD), "1000", "1.5"],
        capture_output=True,
        text=True,
        timeout=HANG_S * 2,
        cwd=CHILD.parent,
        env=dict(os.environ),  # FRAMERPC_PURE: the same engine
    )
    assert "Assertion failed" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    assert done.stdout.startswith("ok "), done.stdout
    assert int(done.stdout.split()[1]) > 100  # more than the old queue held


def test_the_request_socket_holds_a_reply_per_call_in_flight(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            assert cam._socket.getsockopt(zmq.RCVHWM) == _link.MAX_IN_FLIGHT

    asyncio.run(asyncio.wait_for(main(), HANG_S))


def test_calls_beyond_the_limit_wait_for_a_slot(ctx, server, monkeypatch) -> None:
    monkeypatch.setattr(_link, "MAX_IN_FLIGHT", 2)

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            link = cam._link
            # block() holds the server until release is set (no timeout)
            blocked = [asyncio.create_task(cam.block()) for _ in range(2)]
            await until(lambda: link._in_flight == 2, HANG_S)
            waiting = asyncio.create_task(cam.echo("after"))
            timed = asyncio.create_task(cam.add(1, 2))  # 0.5 s timeout
            dropped = asyncio.create_task(cam.echo("never"))
            await until(lambda: len(link._slot_waiters) == 3, HANG_S)
            dropped.cancel()
            with pytest.raises(TimeoutError, match="'add'"):
                await timed  # its timeout counts while it waits for a slot
            assert link._in_flight == 2 and not waiting.done()
            server.release.set()
            assert [await call for call in blocked] == [True, True]
            assert await waiting == "after"
            with pytest.raises(asyncio.CancelledError):
                await dropped
            assert server.calls.count("echo") == 1  # nothing of the others
            assert link._in_flight == 0 and not link._slot_waiters
            many = await asyncio.gather(*(cam.add(i, 1) for i in range(20)))
            assert many == [i + 1 for i in range(20)]

    asyncio.run(asyncio.wait_for(main(), HANG_S))


def test_a_woken_call_cancelled_passes_its_turn_on(ctx, server, monkeypatch) -> None:
    monkeypatch.setattr(_link, "MAX_IN_FLIGHT", 1)

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            link = cam._link
            blocked = asyncio.create_task(cam.block())
            await until(lambda: link._in_flight == 1, HANG_S)
            first = asyncio.create_task(cam.echo("first"))
            second = asyncio.create_task(cam.echo("second"))
            await until(lambda: len(link._slot_waiters) == 2, HANG_S)
            free = link._free_slot

            def free_then_cancel() -> None:
                # first is woken, then cancelled before it runs
                link._free_slot = free  # type: ignore[method-assign]
                free()
                first.cancel()

            link._free_slot = free_then_cancel  # type: ignore[method-assign]
            server.release.set()
            assert await blocked is True
            assert await second == "second"  # first handed its turn on
            with pytest.raises(asyncio.CancelledError):
                await first
            assert server.calls.count("echo") == 1

    asyncio.run(asyncio.wait_for(main(), HANG_S))
