"""RPCStream through the asyncio proxy: close, cancellation, restarts,
refusals, hostile messages and the bounded reads of a wake-up.

``run`` fails when a task outlives a test's coroutine and the ``ctx``
fixture's term() when a socket does; waits are polled conditions with
ceilings that only catch a hang.
"""

from __future__ import annotations

import asyncio
import logging

import msgpack
import pytest
import zmq
from aio_helpers import run, until
from devices import bind_again
from streams_helpers import WAIT_S, Cam, CamServer, _frame, _hub

import framerpc
import framerpc.aio
from framerpc.aio import _streams
from framerpc.aio._fdwatch import FdWatch
from framerpc.errors import RemoteError
from framerpc.transport import DEFAULT_OPTIONS
from framerpc.wire import framing
from framerpc.wire._framing_common import OutOfBand


def test_close_ends_an_iteration_and_closes_the_socket(ctx, served, loop_mode):
    server = served()

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            sub = await cam.frames.subscribe(policy="queue", queue=4)
            seen: list[int] = []

            async def consume() -> str:
                async for _, info in sub:
                    seen.append(info["seq"])
                return "ended"

            consumer = asyncio.create_task(consume())
            server.frames.publish(_frame(0))
            await until(lambda: seen == [0])
            sub.close()
            assert await asyncio.wait_for(consumer, WAIT_S) == "ended"
            assert sub.closed and sub._socket.closed
            with pytest.raises(EOFError):
                await sub.get(0)
            assert not cam.frames.subscriptions
            await until(lambda: server.frames.stats["subscribers"] == 0)  # unsub

    run(main())


def test_closing_the_proxy_ends_iterations_and_callbacks(ctx, served, loop_mode):
    server = served()

    async def main() -> None:
        cam = await framerpc.aio.connect(Cam, server.url, context=ctx)
        blocked = asyncio.Event()

        async def stuck(frame, info) -> None:
            blocked.set()
            await asyncio.Event().wait()  # until cancelled

        iterated = await cam.frames.subscribe(policy="latest")
        called = await cam.frames.subscribe(stuck, policy="latest")
        consumer = asyncio.create_task(anext(iterated))
        server.frames.publish(b"to the callback")
        await asyncio.wait_for(blocked.wait(), WAIT_S)
        await consumer  # the iterator got it too
        consumer = asyncio.create_task(anext(iterated))
        await asyncio.sleep(0)
        await cam.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(consumer, WAIT_S)
        assert iterated.closed and called.closed and not called._tasks
        assert iterated._socket.closed and called._socket.closed
        with pytest.raises(RuntimeError, match="closed"):
            cam.frames.subscribe()

    run(main())


def test_cancelling_the_consumer_leaves_nothing_running(ctx, served, loop_mode):
    """The task iterating inside ``async with`` is cancelled: the
    subscription is closed (socket, timer), the server forgets it, and no
    task is left (``run`` checks)."""
    server = served()

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            subs = []

            async def consume() -> None:
                async with cam.frames.subscribe(policy="latest") as sub:
                    subs.append(sub)
                    async for _ in sub:
                        pass

            consumer = asyncio.create_task(consume())
            await until(lambda: subs and subs[0].subscribed.is_set())
            server.frames.publish(b"x")
            await until(lambda: subs[0].received == 1)
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            sub = subs[0]
            assert sub.closed and sub._socket.closed and sub._timer is None
            assert not cam.frames.subscriptions
            await until(lambda: server.frames.stats["subscribers"] == 0)
            assert await cam.ping() == "pong"  # the proxy is fine

    run(main())


def test_destroying_the_context_closes_the_subscriptions(served, loop_mode):
    """``Context.destroy()`` on the loop under a live subscription: its
    socket is closed (term() does not hang) and its iteration ends."""
    server = served()
    client_ctx = zmq.Context()

    async def main() -> None:
        cam = await framerpc.aio.connect(Cam, server.url, context=client_ctx)
        sub = await cam.frames.subscribe(policy="latest")
        consumer = asyncio.create_task(anext(sub))
        await asyncio.sleep(0)
        client_ctx.destroy(linger=0)
        assert client_ctx.closed and sub.closed and sub._socket.closed
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(consumer, WAIT_S)
        await cam.aclose()  # still fine after

    run(main())


def test_cancelling_a_get_with_timeout_keeps_the_subscription(ctx, served):
    server = served()

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            async with cam.frames.subscribe(policy="latest") as sub:
                with pytest.raises(TimeoutError, match="no frame"):
                    await sub.get(0.05)
                getter = asyncio.create_task(sub.get())
                await asyncio.sleep(0.01)
                getter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await getter
                assert not sub._waiters
                server.frames.publish(b"after")
                frame, _ = await sub.get(WAIT_S)
                assert bytes(frame) == b"after"

    run(main())


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_a_subscription_follows_a_server_restart(ctx, tmp_path, kind, loop_mode):
    """The new server process binds a new stream socket (tcp: a new port;
    ipc: the same path, which answers "nosub") and has a new epoch: the
    subscription resumes, seq counts from 0 again."""
    address = "tcp://127.0.0.1" if kind == "tcp" else f"ipc://{tmp_path}/cam.sock"
    first = CamServer(ctx, address)
    first.start()
    servers = [first]

    async def main() -> None:
        async with framerpc.aio.connect(Cam, first.url, context=ctx) as cam:
            async with cam.frames.subscribe(policy="latest") as sub:
                first.frames.publish(_frame(0))
                _, before = await sub.get(WAIT_S)
                first.close()
                second = bind_again(lambda: CamServer(ctx, first.url))
                servers.append(second)
                second.start()
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT_S
                while True:
                    assert loop.time() < deadline, "the subscription did not resume"
                    second.frames.publish(_frame(1))
                    try:
                        _, after = await sub.get(0.2)
                    except TimeoutError:
                        continue
                    if after["epoch"] != before["epoch"]:
                        break
                assert after["epoch"] == _hub(second).epoch
                assert after["seq"] < second.frames.stats["published"]
                assert await cam.ping() == "pong"

    try:
        run(main())
    finally:
        for server in servers:
            server.close()


def test_refused_and_unknown_streams(ctx, served):
    """A stream the server lacks: RuntimeError at once; a subscription the
    server refuses (forced to its stream socket): RemoteError when
    awaited, with nothing left open."""

    class Other:
        other = framerpc.RPCStream()

    server = served()

    async def main() -> None:
        async with framerpc.aio.connect(Other, server.url, context=ctx) as proxy:
            with pytest.raises(RuntimeError, match="no stream 'other'"):
                proxy.other.subscribe()
            _streams._state(proxy).urls["other"] = _hub(server).url
            sub = proxy.other.subscribe()
            with pytest.raises(RemoteError, match="no stream"):
                await sub
            assert sub.closed and sub._socket.closed
            with pytest.raises(RemoteError):
                async with proxy.other.subscribe(policy="queue"):
                    pass
            assert not proxy.other.subscriptions

    run(main())


def test_hostile_server_messages_are_ignored(ctx, caplog):
    """A fake stream server answers "ok", then sends malformed messages, a
    frame of an old epoch and a frame going back: the subscription logs,
    drops them and delivers the good frame after."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    class Fake:
        def __init__(self) -> None:
            self.url = "tcp://127.0.0.1:1"
            self.context = ctx
            self._timeout = 1000
            self._options = DEFAULT_OPTIONS

    async def main() -> None:
        client = Fake()
        _streams._state(client).urls["frames"] = f"tcp://127.0.0.1:{port}"
        handle = _streams.AsyncStream(client, "frames")
        sub = _streams.AsyncSubscription(handle, "queue", 8, None)
        try:
            while not router.poll(0):
                await asyncio.sleep(0.01)
            peer, control = router.recv_multipart()
            assert msgpack.unpackb(control)["e"] == "sub"
            ok = {"v": 1, "e": "ok", "s": "frames", "ep": 7, "n": 8, "pi": 0}
            router.send_multipart([peer, msgpack.packb(ok)])
            await asyncio.wait_for(sub.started(), WAIT_S)
            body = framing.encode({"t": 1.0, "in": {}, "x": OutOfBand(b"good")})

            def frame(seq: int, epoch: int = 7) -> list:
                meta = {"v": 1, "e": "frame", "q": seq, "d": 0, "ep": epoch}
                return [peer, msgpack.packb(meta), *body]

            for message in (
                [peer, b"\xc1"],
                [peer, msgpack.packb({"v": 1, "e": "frame", "q": -1})],
                frame(3, epoch=6),  # from before a restart
                frame(5),
                frame(4),  # going back
                [peer, msgpack.packb({"v": 1, "e": "err", "er": "said"})],
                frame(9),
            ):
                router.send_multipart(message)
            with caplog.at_level(logging.WARNING, "framerpc.aio._subscription"):
                got = [await sub.get(WAIT_S) for _ in range(2)]
            assert [info["seq"] for _, info in got] == [5, 9]
            assert [info["dropped"] for _, info in got] == [0, 3]
            assert bytes(got[0][0]) == b"good"
            assert "malformed" in caplog.text and "after 5 ignored" in caplog.text
            assert "said" in caplog.text and not sub.closed
        finally:
            await sub.aclose()
            router.close()

    run(main())


def test_read_each_takes_a_bounded_number_of_messages_per_wake_up(ctx):
    """A flood is read ``budget`` messages a turn: other callbacks of the
    loop run in between, and every message is read in the end."""
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    pull.bind("inproc://read-each")
    push.connect("inproc://read-each")
    for i in range(25):
        push.send(b"%d" % i)

    async def main() -> None:
        got: list[bytes] = []
        turns: list[int] = []
        watch: FdWatch | None = None

        def on_readable() -> None:
            assert watch is not None
            watch.read_each(lambda frames: got.append(bytes(frames[0])), budget=10)
            turns.append(len(got))

        watch = FdWatch(pull, on_readable)
        try:
            await until(lambda: len(got) == 25)
            assert got == [b"%d" % i for i in range(25)]
            # counts after each turn (a turn may also find nothing)
            assert sorted(set(turns)) == [10, 20, 25]
        finally:
            await watch.aclose()

    try:
        run(main())
    finally:
        push.close(0)
        pull.close(0)
