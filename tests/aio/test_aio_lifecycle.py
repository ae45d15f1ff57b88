"""framerpc.aio and ``Context.destroy()``: destroying the context under a
live asyncio proxy (a call in flight, a signal iterator open) neither
hangs in ``term()`` nor leaks a socket, from the loop's thread or another.
And a link that reads replies only while requests are unanswered does
not stall on a server that sends more than it was asked.

The server lives on the ``ctx`` fixture's context; each client on a
context of its own, which the test destroys.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
import zmq
from aio_helpers import run, until
from devices import Camera, CameraServer

import framerpc.aio
from framerpc import protocol, transport
from framerpc._lifecycle import DestroyHook
from framerpc.aio import _fdwatch
from framerpc.aio._link import Link


@pytest.fixture
def server(ctx: zmq.Context, serve: Callable) -> CameraServer:
    server = serve(CameraServer(ctx, "tcp://127.0.0.1"))
    yield server
    server.release.set()  # block() returns: serve_forever can stop


def _hooks(context: zmq.Context) -> list:
    return [s for s in context._sockets if isinstance(s, DestroyHook)]


def test_destroy_in_the_loop_under_a_live_proxy(server, loop_mode) -> None:
    client_ctx = zmq.Context()

    async def main() -> None:
        cam = await framerpc.aio.connect(Camera, server.url, context=client_ctx)
        assert len(_hooks(client_ctx)) == 1
        iterator = cam.pair_ready.subscribe()
        call = asyncio.create_task(cam.block())
        await until(lambda: "block" in server.calls)
        # from a coroutine: term() finds every socket closed, or hangs
        client_ctx.destroy(linger=0)
        assert client_ctx.closed
        with pytest.raises(RuntimeError, match="context was destroyed"):
            await call
        assert [args async for args in iterator] == []  # the iterator ended
        with pytest.raises(RuntimeError, match="closed"):
            await cam.echo(1)
        await cam.aclose()  # still fine after

    run(main())


def test_destroy_from_another_thread(server, loop_mode) -> None:
    client_ctx = zmq.Context()

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=client_ctx) as cam:
            iterator = cam.pair_ready.subscribe()
            call = asyncio.create_task(cam.block())
            await until(lambda: "block" in server.calls)
            destroyer = threading.Thread(
                target=client_ctx.destroy, kwargs={"linger": 0}
            )
            destroyer.start()
            try:
                with pytest.raises(RuntimeError, match="context was destroyed"):
                    await call
                assert [args async for args in iterator] == []
                # term() returns once the loop closed the sockets
                await until(lambda: not destroyer.is_alive())
            finally:
                destroyer.join(timeout=30)
            assert client_ctx.closed

    run(main())


def test_destroy_after_the_loop_ended(server) -> None:
    """A proxy left open when its loop ended: destroy() closes its sockets
    from the calling thread (nobody else can use them)."""
    client_ctx = zmq.Context()

    async def main() -> None:
        cam = await framerpc.aio.connect(Camera, server.url, context=client_ctx)
        assert await cam.echo(3) == 3
        # the proxy's tasks end with the loop (run() wants none left)
        for task in cam._tasks + cam._link._tasks:
            task.cancel()
        await asyncio.sleep(0)

    run(main())
    closer = threading.Thread(target=client_ctx.destroy, kwargs={"linger": 0})
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive(), "destroy() hung: a socket was left open"
    assert client_ctx.closed


def test_aclose_leaves_no_hook(server) -> None:
    client_ctx = zmq.Context()

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=client_ctx) as cam:
            assert await cam.echo(1) == 1
            assert len(_hooks(client_ctx)) == 1
        assert _hooks(client_ctx) == []

    run(main())
    client_ctx.term()  # returns: nothing left open


def test_a_stray_reply_does_not_stall_the_link(ctx, loop_mode) -> None:
    """A broken server that answers every request twice: the link reads a
    message only while a request is unanswered, so the extra replies stay
    unread; the next replies must still be seen (the watch turn kicks)."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def answer_twice() -> None:
        while not stop.is_set():
            if not router.poll(50):
                continue
            identity, empty, *body = router.recv_multipart()
            request = protocol.decode_request(body)
            reply = protocol.encode_result(request.request_id, request.args[0])
            for _ in range(2):
                router.send_multipart([identity, empty, *reply])

    thread = threading.Thread(target=answer_twice)
    thread.start()

    async def main() -> None:
        link = Link(f"tcp://127.0.0.1:{port}", transport.DEFAULT_OPTIONS)
        try:
            link.open(ctx)
            for rid in range(1, 6):
                frames = protocol.encode_call(rid, "echo", [rid], {})
                reply = await link.exchange(frames, rid, 20000, "echo")
                assert reply.value == rid
        finally:
            await link.aclose()

    try:
        run(main())
    finally:
        stop.set()
        thread.join(timeout=10)
        router.close()


def test_each_reply_wakes_the_loop(server, monkeypatch, loop_mode) -> None:
    """Every reply is read from the socket's wake-up, not found later by
    the watch turn: with the watch's drain disabled, sequential and
    overlapping calls still complete (a reader that leaves the queue
    unchecked after a reply never gets the next wake-up)."""
    monkeypatch.setattr(_fdwatch.FdWatch, "drain", lambda self: None)

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url) as cam:
            for i in range(50):
                assert await asyncio.wait_for(cam.echo(i), 20) == i
            results = await asyncio.wait_for(
                asyncio.gather(*(cam.echo(i) for i in range(50))), 20
            )
            assert results == list(range(50))  # echo: add has a 0.5 s timeout
            for i in range(20):
                assert await asyncio.wait_for(cam.echo(i), 20) == i

    run(main())
