"""framerpc.aio client when calls do not simply succeed: timeouts and late
replies, cancelled calls, closing, a server not there yet or killed, and a
proxy used from another loop.

Each test runs its coroutine with ``run`` (tests/aio_helpers.py), which
also checks that no task is left on the loop at the end; the ``ctx``
fixture's term() checks that no socket is left.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from aio_helpers import run, until
from devices import BLOCK_LIMIT_S, Camera, CameraServer
from test_dead_peers import child  # noqa: F401 - the fixture

import framerpc.aio
from framerpc.aio._link import Link


def test_timeout_then_late_reply_dropped(ctx, server, caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG, logger="framerpc.aio._link")
    # sleep() is registered with timeout=100 ms; it replies only once the
    # call timed out (a real sleep could end first on a stalled loop)
    timed_out = threading.Event()

    def held(seconds: float) -> float:
        timed_out.wait(BLOCK_LIMIT_S)  # a ceiling: the test sets it
        return seconds

    monkeypatch.setattr(server, "sleep", held)

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            with pytest.raises(TimeoutError, match="no reply to 'sleep'") as caught:
                await cam.sleep(0.5)
            assert type(caught.value) is TimeoutError
            timed_out.set()
            # served after the sleep: its late reply comes first, and is dropped
            assert await cam.echo("next") == "next"
            assert not cam._pending

    try:
        run(main())
    finally:
        timed_out.set()
    assert any("dropped a late reply" in r.message for r in caplog.records)


def test_cancelled_call_drops_its_late_reply(ctx, server, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="framerpc.aio._link")

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            task = asyncio.create_task(cam.block())  # no timeout
            await until(lambda: "block" in server.calls)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not cam._pending
            server.release.set()  # block() replies now: nobody waits for it
            assert await cam.echo("after") == "after"

    run(main())
    assert any("dropped a late reply" in r.message for r in caplog.records)


def test_clean_shutdown_and_use_after_close(ctx, server) -> None:
    async def main() -> None:
        cam = await framerpc.aio.connect(Camera, server.url, context=ctx)
        blocked = asyncio.create_task(cam.block())
        await until(lambda: "block" in server.calls)
        await cam.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await blocked
        await cam.aclose()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            await cam.echo(1)
        server.release.set()
        assert cam._socket is None

    run(main())


def test_no_server_times_out_and_leaves_nothing(ctx) -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError, match="GET_INVENTORY"):
            await framerpc.aio.connect(
                Camera, "tcp://127.0.0.1:1", context=ctx, timeout=200
            )

    run(main())


def test_calls_wait_for_a_connection(ctx, serve, tmp_path, loop_mode, monkeypatch):
    """A request waits (on the loop) for a server that is not there yet."""
    url = f"ipc://{tmp_path}/late.sock"
    waited = asyncio.Event()
    send_later = Link._send_later

    async def spy(self: Link, *args: Any) -> None:
        waited.set()
        await send_later(self, *args)

    monkeypatch.setattr(Link, "_send_later", spy)

    async def main() -> None:
        # what connect() returns is a coroutine: create_task takes it
        opening = asyncio.create_task(
            framerpc.aio.connect(Camera, url, context=ctx, timeout=20000)
        )
        await waited.wait()  # the inventory request could not go out
        server = serve(CameraServer(ctx, url))
        async with await opening as cam:
            assert await cam.echo("late") == "late"
            # echo has the default 10 s timeout (add's 0.5 s is too short for
            # the last of 100 calls on a loaded machine)
            results = await asyncio.gather(*(cam.echo(i) for i in range(100)))
            assert results == list(range(100))
            pairs = cam.pair_ready.subscribe()
            await cam.emit_pair(3, "c")
            assert await anext(pairs) == ((3, "c"),)
        assert server.calls.count("echo") == 101  # "late" ran once

    run(main())


def test_killed_server_fails_a_call_in_flight(ctx, child) -> None:  # noqa: F811
    from dead_peer_device import Probe
    from test_dead_peers import FAST

    from framerpc import PeerLostError

    server = child("tcp://127.0.0.1")

    async def main() -> None:
        async with framerpc.aio.connect(
            Probe, server.url, context=ctx, options=FAST
        ) as probe:
            call = asyncio.create_task(probe.hang())  # no timeout
            await asyncio.to_thread(server.wait_for_line, "hanging")
            await asyncio.to_thread(server.kill)
            with pytest.raises(PeerLostError, match="'hang'") as caught:
                await call
            assert isinstance(caught.value, TimeoutError)
            assert not probe._pending

    run(main())


def test_a_proxy_refuses_another_loop(ctx, server) -> None:
    """A proxy's sockets are watched by its own loop: used from another
    loop (here a second one in another thread) it says so."""

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            outcome: dict[str, BaseException] = {}

            def elsewhere() -> None:
                try:
                    asyncio.run(cam.echo(1))
                except BaseException as exc:
                    outcome["error"] = exc

            await asyncio.to_thread(elsewhere)
            assert isinstance(outcome.get("error"), RuntimeError)
            assert "another event loop" in str(outcome["error"])
            assert await cam.echo(2) == 2

    run(main())
