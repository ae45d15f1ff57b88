"""framerpc.aio client: an asyncio proxy of a (thread-served) RPCServer.

Each test runs its coroutine with ``run``, which also checks that no task
is left on the loop at the end; the ``ctx`` fixture's term() checks that
no socket is left, and ``no_leftover_threads`` that no thread is.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest
import zmq
import zmq.asyncio
from devices import Camera, CameraServer, bind_again, make_array
from test_dead_peers import child  # noqa: F401 - the fixture

import framerpc.aio
from framerpc import NoResult, RemoteError
from framerpc.aio import AsyncClient
from framerpc.aio._link import Link

#: Ceiling (s) of one test's coroutine: only catches a hang.
HANG_S = 30


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run(coro), failing if any other task outlives it."""

    async def main() -> Any:
        try:
            return await asyncio.wait_for(coro, HANG_S)
        finally:
            current = asyncio.current_task()
            left = [t for t in asyncio.all_tasks() if t is not current]
            assert not left, f"tasks left on the loop: {left}"

    return asyncio.run(main())


async def until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Wait (on the loop) until ``condition()`` is true; a hang ceiling."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


@pytest.fixture
def server(ctx: zmq.Context, serve: Callable) -> CameraServer:
    return serve(CameraServer(ctx, "tcp://127.0.0.1"))


def test_calls_and_signatures(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            assert await cam.set_exposure(5) is True
            assert server.exposure == 5
            assert await cam.add(2, 3, scale=4) == 20
            assert await cam.echo({"a": [1, "x", None]}) == {"a": [1, "x", None]}
            assert await cam.call("add", 1, b=1) == 2
            assert await cam.execute("add", {"args": [1, 2]}) == (True, 3)
            assert cam.name == ""
            assert inspect.iscoroutinefunction(type(cam).add)
            assert inspect.signature(type(cam).add) == inspect.signature(Camera.add)
            assert type(cam).add.__doc__ == Camera.add.__doc__

    run(main())


def test_buffers_arrive_zero_copy(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            frame, info = await cam.grab([600, 400], "uint16")
            assert info == {"shape": [600, 400], "dtype": "uint16"}
            np.testing.assert_array_equal(frame, make_array([600, 400], "uint16"))
            assert not frame.flags.writeable and not frame.flags.owndata
            data, info = await cam.read_buffer(100_000, "bytearray")
            assert type(data) is memoryview and data.readonly
            assert len(data) == 100_000 and info["kind"] == "bytearray"
            array = make_array([1000, 100], "float32")
            assert np.array_equal(await cam.echo(array), array)

    run(main())


def test_remote_errors_as_noresult_or_raised(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(
            Camera, server.url, context=ctx, raise_errors=False
        ) as cam:
            result = await cam.fail("boom")
            assert type(result) is NoResult and not result
            assert result.error == "ValueError: boom"
            assert "raise ValueError(message)" in result.traceback
            missing = await cam.call("no_such_method")
            assert type(missing) is NoResult and "not implemented" in missing.error
            ok, (error, _) = await cam.execute("fail", {"args": ["x"]})
            assert not ok and error == "ValueError: x"
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            with pytest.raises(RemoteError) as caught:
                await cam.fail("boom")
            assert caught.value.remote_type == "ValueError"
            assert caught.value.message == "boom"
            # execute reports, whatever raise_errors says
            assert (await cam.execute("fail", {"args": ["y"]}))[0] is False
            # the client is still fine
            assert await cam.echo(7) == 7

    run(main())


def test_unsendable_argument_is_a_type_error(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            with pytest.raises(TypeError):
                await cam.echo({1, 2})
            assert await cam.echo(1) == 1
            assert not cam._pending

    run(main())


def test_properties_are_awaitables(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            assert await cam.gain == 1
            await cam.gain.set(4)
            assert server.gain == 4
            assert await cam.gain.get() == 4
            with pytest.raises(RemoteError, match="gain must be >= 0"):
                await cam.gain.set(-1)
            with pytest.raises(AttributeError, match=r"await proxy\.gain\.set"):
                cam.gain = 3
            # the notify signal of a property
            changes = cam.mode.notify.subscribe()
            await cam.mode.set("hdr")
            assert await changes.__anext__() == ("hdr",)
            assert await cam.mode == "hdr"
            assert cam.mode.notify.name == "mode_changed"
            assert cam.gain.notify is None

    run(main())


def test_property_errors_follow_raise_errors(ctx, server) -> None:
    from devices import ExtendedCamera

    async def main() -> None:
        async with framerpc.aio.connect(
            ExtendedCamera, server.url, context=ctx, raise_errors=False
        ) as cam:
            zoom = await cam.zoom
            assert type(zoom) is NoResult and "not found" in zoom.error
        async with framerpc.aio.connect(ExtendedCamera, server.url, context=ctx) as cam:
            with pytest.raises(RemoteError, match="not found"):
                await cam.zoom

    run(main())


def test_timeout_then_late_reply_dropped(ctx, server, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="framerpc.aio._link")

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            # sleep() is registered with timeout=100 ms and sleeps 0.5 s
            with pytest.raises(TimeoutError, match="no reply to 'sleep'") as caught:
                await cam.sleep(0.5)
            assert type(caught.value) is TimeoutError
            # served after the sleep: its late reply comes first, and is dropped
            assert await cam.echo("next") == "next"
            assert not cam._pending

    run(main())
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


def test_a_thousand_concurrent_calls_get_their_own_replies(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            results = await asyncio.gather(*(cam.add(i, 1) for i in range(1000)))
            assert results == [i + 1 for i in range(1000)]
            frames = await asyncio.gather(
                *(cam.grab([10 + i, 3], "uint8") for i in range(20))
            )
            for i, (frame, info) in enumerate(frames):
                assert frame.shape == (10 + i, 3) and info["shape"] == [10 + i, 3]
            assert not cam._pending

    run(main())


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


async def _take(iterator: Any, count: int) -> Any:
    async for args in iterator:
        yield args
        count -= 1
        if count == 0:
            return


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


def test_an_asyncio_context_works_too(server) -> None:
    actx = zmq.asyncio.Context()

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=actx) as cam:
            assert await cam.echo("x") == "x"

    run(main())
    actx.term()


def test_untyped_client_and_clashes(ctx, server) -> None:
    async def main() -> None:
        async with await AsyncClient.open(server.url, context=ctx) as client:
            assert await client.call("add", 1, 2) == 3
            assert await client.get_property("gain") == 1
            assert "grab" in client._buffer_methods
            with pytest.raises(RuntimeError, match="no signals"):
                AsyncClient("tcp://127.0.0.1:1").signal_hub  # noqa: B018

    class Clashing:
        def call(self) -> None: ...

    with pytest.raises(TypeError, match="would replace"):
        framerpc.aio.connect(Clashing, server.url)
    with pytest.raises(TypeError, match="interface class"):
        framerpc.aio.connect(object(), server.url)  # type: ignore[arg-type]
    run(main())


@pytest.fixture(params=["add_reader", "zmq.asyncio"])
def loop_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a proxy watches its sockets: ``loop.add_reader`` (the
    fast path), and zmq.asyncio's poll on loops without it (Windows'
    proactor loop), forced by an ``add_reader`` that is not implemented."""
    if request.param == "zmq.asyncio":
        from framerpc.aio import _fdwatch

        real = _fdwatch.FdWatch.__init__

        def init(self: Any, sock: Any, on_readable: Any) -> None:
            # refused to FdWatch only: zmq.asyncio's own add_reader must work
            loop: Any = asyncio.get_running_loop()

            def unsupported(*args: Any) -> None:
                raise NotImplementedError

            loop.add_reader = unsupported
            try:
                real(self, sock, on_readable)
            finally:
                del loop.add_reader
            assert self._asock is not None  # the fallback is in use

        monkeypatch.setattr(_fdwatch.FdWatch, "__init__", init)
    return str(request.param)


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
            results = await asyncio.gather(*(cam.add(i, i) for i in range(100)))
            assert results == [2 * i for i in range(100)]
            pairs = cam.pair_ready.subscribe()
            await cam.emit_pair(3, "c")
            assert await anext(pairs) == ((3, "c"),)
        assert server.calls.count("echo") == 1

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
