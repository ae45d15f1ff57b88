"""Helpers of the asyncio client tests (tests/aio/), loaded as a plugin
by tests/conftest.py: ``run`` and ``until`` to import, and the ``server``
and ``loop_mode`` fixtures (a helper module beside those tests would not
be importable when the plugins load, before pytest puts that folder on
sys.path).

Each test runs its coroutine with ``run``, which also checks that no task
is left on the loop at the end; the ``ctx`` fixture's term() checks that
no socket is left, and ``no_leftover_threads`` that no thread is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import zmq
from devices import CameraServer

#: Ceiling (s) of one test's coroutine: only catches a hang.
HANG_S = 40


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


async def _take(iterator: Any, count: int) -> Any:
    async for args in iterator:
        yield args
        count -= 1
        if count == 0:
            return


@pytest.fixture
def server(ctx: zmq.Context, serve: Callable) -> CameraServer:
    """A ``CameraServer`` served on a thread, on a free loopback port."""
    return serve(CameraServer(ctx, "tcp://127.0.0.1"))


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
