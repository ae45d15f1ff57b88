"""RPCServer inside an asyncio loop: ``await server.serve()`` and devices
with ``async def`` methods, next to sync ones.

Concurrency is shown with events: two calls of an async method that each
wait for a gate the test opens are both running before either returns.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pytest
import zmq
from aio_helpers import run, until

import framerpc.aio
from framerpc import NoResult, RPCClient, RPCProperty, RPCServer, RPCSignal


class Worker(ABC):
    """A device with async and sync methods."""

    progress = RPCSignal(int)
    level = RPCProperty(doc="An int the client may set.")

    @abstractmethod
    def hold(self, key: str) -> str:
        """async: wait until the test opens gate ``key``; return ``key``."""

    @abstractmethod
    def double(self, x: int) -> int:
        """async: ``2 * x`` after a yield to the loop."""

    @abstractmethod
    def count(self, n: int) -> int:
        """async: emit ``progress(i)`` for i < n; return n."""

    @abstractmethod
    def fetch(self, n: int) -> tuple:
        """async buffer method: an array of n float64 and its info."""

    @abstractmethod
    def explode(self, message: str) -> None:
        """async: raise ``RuntimeError(message)``."""

    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """sync: ``a + b``."""

    @abstractmethod
    def thread_name(self) -> str:
        """sync: the name of the thread running it."""


class WorkerServer(Worker, RPCServer):
    def __init__(self, ctx: zmq.Context, url: str) -> None:
        RPCServer.__init__(self, ctx, url)
        self.entered: set[str] = set()
        self.cancelled: set[str] = set()
        self.gates: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self._level = 0

    @RPCProperty
    def level(self) -> int:
        return self._level

    @level.setter
    def level(self, value: int) -> None:
        self._level = value

    @RPCServer.register_method_json(timeout=None)
    async def hold(self, key: str) -> str:
        self.entered.add(key)
        try:
            await self.gates[key].wait()
        except asyncio.CancelledError:
            self.cancelled.add(key)
            raise
        return key

    @RPCServer.register_method_json
    async def double(self, x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @RPCServer.register_method_json
    async def count(self, n: int) -> int:
        for i in range(n):
            self.progress.emit(i)
            await asyncio.sleep(0)
        return n

    @RPCServer.register_method_buffer
    async def fetch(self, n: int) -> tuple:
        await asyncio.sleep(0)
        return np.arange(n, dtype=np.float64), {"n": n}

    @RPCServer.register_method_json
    async def explode(self, message: str) -> None:
        await asyncio.sleep(0)
        raise RuntimeError(message)

    @RPCServer.register_method_json
    def add(self, a: int, b: int) -> int:
        return a + b

    @RPCServer.register_method_json
    def thread_name(self) -> str:
        return threading.current_thread().name


@RPCClient.register_interface(Worker)
class WorkerProxy(Worker, RPCClient):
    pass


def test_async_methods_are_detected(ctx) -> None:
    server = WorkerServer(ctx, "inproc://detect")
    try:
        assert server._async_methods == {"hold", "double", "count", "fetch", "explode"}
    finally:
        server.close()


def test_async_calls_run_concurrently(ctx, loop_mode) -> None:
    async def main() -> None:
        server = WorkerServer(ctx, "tcp://127.0.0.1")
        serving = asyncio.create_task(server.serve())
        async with framerpc.aio.connect(Worker, server.url, context=ctx) as dev:
            first = asyncio.create_task(dev.hold("a"))
            second = asyncio.create_task(dev.hold("b"))
            # both started, neither can have returned: they overlap
            await until(lambda: server.entered == {"a", "b"})
            # sync and async calls are answered meanwhile
            assert await dev.add(1, 2) == 3
            assert await dev.double(4) == 8
            server.gates["b"].set()
            assert await second == "b"
            assert not first.done()
            server.gates["a"].set()
            assert await first == "a"
        server.stop_server()
        await serving

    run(main())


def test_sync_and_async_members_mix(ctx, loop_mode) -> None:
    async def main() -> None:
        server = WorkerServer(ctx, "tcp://127.0.0.1")
        serving = asyncio.create_task(server.serve())
        async with framerpc.aio.connect(
            Worker, server.url, context=ctx, raise_errors=False
        ) as dev:
            # sync methods run inline, on the loop's thread
            assert await dev.thread_name() == threading.current_thread().name
            await dev.level.set(7)
            assert await dev.level == 7 and server.level == 7
            progress = dev.progress.subscribe()
            assert await dev.count(3) == 3
            assert [await progress.__anext__() for _ in range(3)] == [(0,), (1,), (2,)]
            array, info = await dev.fetch(1000)
            assert info == {"n": 1000} and not array.flags.writeable
            np.testing.assert_array_equal(array, np.arange(1000, dtype=np.float64))
            failed = await dev.explode("no")
            assert type(failed) is NoResult and failed.error == "RuntimeError: no"
            assert "raise RuntimeError(message)" in failed.traceback
            missing = await dev.call("nope")
            assert type(missing) is NoResult and "not implemented" in missing.error
        server.stop_server()
        await serving

    run(main())


def test_a_flood_of_calls_to_a_loop_served_device(ctx, loop_mode) -> None:
    """More requests at once than the reader answers in one go (64): the
    rest are answered after the other tasks ran, none is left unread."""

    async def main() -> None:
        server = WorkerServer(ctx, "tcp://127.0.0.1")
        serving = asyncio.create_task(server.serve())
        async with framerpc.aio.connect(Worker, server.url, context=ctx) as dev:
            sync_calls = [dev.add(i, 1) for i in range(500)]
            async_calls = [dev.double(i) for i in range(200)]
            results = await asyncio.gather(*sync_calls, *async_calls)
            assert results[:500] == [i + 1 for i in range(500)]
            assert results[500:] == [2 * i for i in range(200)]
            for i in range(20):  # and one at a time after the flood
                assert await dev.add(i, i) == 2 * i
        server.stop_server()
        await serving

    run(main())


def test_stop_request_and_inflight_calls_cancelled(ctx) -> None:
    async def main() -> None:
        server = WorkerServer(ctx, "tcp://127.0.0.1")
        serving = asyncio.create_task(server.serve())
        async with framerpc.aio.connect(
            Worker, server.url, context=ctx, raise_errors=False
        ) as dev:
            pending = asyncio.create_task(dev.hold("never"))
            await until(lambda: "never" in server.entered)
            assert await dev.stop_server() is True
            await serving  # stops 0.2 s after the acknowledgement
            assert server.cancelled == {"never"}
            # the cancelled call answered its client with an error
            result = await asyncio.wait_for(pending, 30)
            assert isinstance(result, NoResult)
            assert "ServerStoppedError" in result.error
            assert "stopped serving during the call" in result.error
        assert server._socket.closed

    run(main())


def test_cancelling_serve_stops_and_closes(ctx) -> None:
    async def main() -> None:
        server = WorkerServer(ctx, "tcp://127.0.0.1")
        serving = asyncio.create_task(server.serve())
        async with framerpc.aio.connect(Worker, server.url, context=ctx) as dev:
            assert await dev.double(1) == 2
            with pytest.raises(RuntimeError, match="already serving"):
                await server.serve()
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert server._socket.closed

    run(main())


def test_close_from_another_thread(ctx) -> None:
    async def main() -> None:
        server = WorkerServer(ctx, "tcp://127.0.0.1")
        serving = asyncio.create_task(server.serve())
        await until(server._ready.is_set)
        closer = threading.Thread(target=server.close)
        closer.start()
        await serving  # close() made serve return
        while closer.is_alive():  # it returns once serving has stopped
            await asyncio.sleep(0.01)
        closer.join()
        assert server._socket.closed

    run(main())


def test_sync_client_of_a_loop_served_device(ctx) -> None:
    async def main() -> None:
        server = WorkerServer(ctx, "tcp://127.0.0.1")
        serving = asyncio.create_task(server.serve())

        def use() -> Any:
            with WorkerProxy(ctx, server.url) as proxy:
                return proxy.double(21), proxy.add(1, 1)

        assert await asyncio.to_thread(use) == (42, 2)
        server.stop_server()
        await serving

    run(main())


def test_start_serves_async_methods_in_a_thread_loop(ctx) -> None:
    with WorkerServer(ctx, "tcp://127.0.0.1") as server:
        server.start()
        with WorkerProxy(ctx, server.url) as proxy:
            assert proxy.double(5) == 10
            assert proxy.add(2, 2) == 4
            assert proxy.thread_name().startswith("RPCServer(")
            array, _ = proxy.fetch(10)
            assert list(array) == list(range(10))
    assert server._socket.closed


def test_async_method_refused_on_the_general_path(ctx) -> None:
    """A request that takes the server's general path (a REQ peer behind
    a proxy, a longer envelope) cannot be awaited there: a clear error."""

    async def main() -> None:
        from framerpc import protocol

        server = WorkerServer(ctx, "tcp://127.0.0.1")
        serving = asyncio.create_task(server.serve())
        frames = protocol.encode_call(9, "double", [1], {})
        reply = server._execute(protocol.decode_request(frames))[0]
        assert not reply.ok and "needs serve()" in reply.error
        server.stop_server()
        await serving

    run(main())
