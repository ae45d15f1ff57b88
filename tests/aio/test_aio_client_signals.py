"""framerpc.aio client: a proxy's signals, as async iterators and loop
callbacks, and after a server restart.

Each test runs its coroutine with ``run`` (tests/aio_helpers.py), which
also checks that no task is left on the loop at the end; the ``ctx``
fixture's term() checks that no socket is left.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from aio_helpers import _take, run, until
from devices import Camera, CameraServer, bind_again

import framerpc.aio


def test_signals_as_async_iterators_and_callbacks(ctx, server) -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            seen: list[tuple] = []
            threads: set[int] = set()
            got_async = asyncio.Event()

            def on_pair(pair: tuple) -> None:
                threads.add(threading.get_ident())
                seen.append(pair)

            async def on_pair_async(pair: tuple) -> None:
                await asyncio.sleep(0)
                got_async.set()

            cam.pair_ready.connect(on_pair)
            cam.pair_ready.connect(on_pair)  # duplicates are ignored
            cam.pair_ready.connect(on_pair_async)
            first, second = cam.pair_ready.subscribe(), cam.pair_ready.subscribe()
            await cam.emit_pair(1, "a")
            await cam.emit_pair(2, "b")
            # coerced to the declared tuple[int, str] (msgpack gives a list)
            assert await first.__anext__() == ((1, "a"),)
            assert [args async for args in _take(first, 1)] == [((2, "b"),)]
            assert await second.__anext__() == ((1, "a"),)
            await got_async.wait()
            assert seen == [(1, "a"), (2, "b")] and threads == {loop_thread}
            cam.pair_ready.disconnect(on_pair)
            with pytest.raises(ValueError):
                cam.pair_ready.disconnect(on_pair)
            with pytest.raises(TypeError):
                cam.pair_ready.connect(42)  # type: ignore[arg-type]
            first.close()
            with pytest.raises(StopAsyncIteration):
                await first.__anext__()
        # the client closed: the other iterator ends after what it holds
        assert [args async for args in second] == [((2, "b"),)]

    run(main())


def test_a_slow_iterator_drops_its_oldest_emissions(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            small = cam.frame_ready.subscribe(maxsize=2)
            everything = cam.frame_ready.subscribe()
            for number in range(5):
                server.frame_ready.emit(number)
            got = [args async for args in _take(everything, 5)]
            assert got == [(n,) for n in range(5)]
            assert small.dropped == 3
            assert [args async for args in _take(small, 2)] == [(3,), (4,)]
            with pytest.raises(ValueError):
                cam.frame_ready.subscribe(maxsize=0)

    run(main())


def test_async_for_on_the_signal_itself(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            received: list[tuple] = []
            subscribed = asyncio.Event()

            async def consume() -> None:
                iterator = aiter(cam.frame_ready)
                subscribed.set()
                async for args in iterator:
                    received.append(args)
                    if args == (2,):
                        return

            consumer = asyncio.create_task(consume())
            await subscribed.wait()
            for number in range(3):
                server.frame_ready.emit(number)
            await consumer
            assert received == [(0,), (1,), (2,)]

    run(main())


def test_signals_follow_a_restarted_server(ctx, serve) -> None:
    """A server restarted on the same URL binds a new signal port: the
    proxy reads the inventory again and receives from there."""
    first = serve(CameraServer(ctx, "tcp://127.0.0.1"))
    url = first.url

    async def main() -> None:
        async with framerpc.aio.connect(
            Camera, url, context=ctx, raise_errors=False
        ) as cam:
            frames = cam.frame_ready.subscribe()
            first.frame_ready.emit(1)
            assert await anext(frames) == (1,)
            old_signals = cam.signal_hub.url
            await asyncio.to_thread(first.close)
            # same port, new signal port
            second = serve(bind_again(lambda: CameraServer(ctx, url)))
            await until(lambda: cam.signal_hub.url != old_signals)
            assert cam.signal_hub.url.endswith(f":{second._signal_port}")
            # emit until one arrives: the subscription takes a moment
            got: list[tuple] = []

            async def receive() -> None:
                got.append(await anext(frames))

            receiver = asyncio.create_task(receive())
            while not receiver.done():
                second.frame_ready.emit(2)
                await asyncio.sleep(0.02)
            assert got == [(2,)]
            assert await cam.echo("again") == "again"

    run(main())
