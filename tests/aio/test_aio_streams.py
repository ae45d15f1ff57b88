"""RPCStream through the asyncio proxy: delivery, flow control, callbacks.

The server is the usual threaded one (streams_helpers); each test's
coroutine runs under ``run``, which fails when a task outlives it, and the
``ctx`` fixture's term() fails when a socket does. Waits are polled
conditions with ceilings that only catch a hang. Faults, close and
cancellation: test_aio_streams_faults.py.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
from aio_helpers import run, until
from streams_helpers import WAIT_S, Cam, _frame, _hub_sub

import framerpc.aio
from framerpc.aio import AsyncStream, AsyncSubscription


@pytest.mark.parametrize("kind", ["tcp", "ipc", "inproc"])
def test_frames_arrive_read_only_in_order_with_info(
    ctx,
    served,
    tmp_path,
    kind,
    loop_mode,
):
    url = {
        "tcp": "tcp://127.0.0.1",
        "ipc": f"ipc://{tmp_path}/cam.sock",
        "inproc": "inproc://aio-stream-cam",
    }[kind]
    server = served(url)
    image = np.arange(48, dtype=np.uint16).reshape(4, 4, 3)

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            assert isinstance(cam.frames, AsyncStream) and cam.frames is cam.frames
            async with cam.frames.subscribe(policy="queue", queue=4) as sub:
                assert isinstance(sub, AsyncSubscription)
                assert sub.subscribed.is_set()  # acknowledged on entering
                server.frames.publish(image, {"exposure": 2.5})
                server.frames.publish(b"raw bytes", {"kind": "raw"})
                frame, info = await sub.get(WAIT_S)
                assert frame.dtype == np.uint16 and frame.shape == (4, 4, 3)
                assert np.array_equal(frame, image)
                assert not frame.flags.writeable and not frame.flags.owndata
                assert info["exposure"] == 2.5 and info["seq"] == 0
                assert info["dropped"] == 0 and type(info["t"]) is float
                assert type(info["epoch"]) is int
                raw, info = await sub.get(WAIT_S)
                assert isinstance(raw, memoryview) and raw.readonly
                assert bytes(raw) == b"raw bytes"
                assert info == {**info, "kind": "raw", "seq": 1, "dropped": 0}
                assert sub.received == 2 and sub.dropped == 0

    run(main())


def test_a_queue_subscriber_that_keeps_up_gets_every_frame_in_order(ctx, served):
    """A publisher thread; frames of several sizes; each frame's content
    and seq match what was published with it."""
    server = served()
    total = 60

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            async with cam.frames.subscribe(policy="queue", queue=64) as sub:
                publisher = threading.Thread(
                    target=lambda: [
                        server.frames.publish(_frame(i, 1000 + 997 * i), {"i": i})
                        for i in range(total)
                    ]
                )
                publisher.start()
                seqs = []
                async for frame, info in sub:
                    i = info["i"]
                    assert frame.nbytes == 1000 + 997 * i
                    assert int(frame[0]) == int(frame[-1]) == i % 251
                    assert info["seq"] == i and info["dropped"] == 0
                    seqs.append(i)
                    if i == total - 1:
                        break
                publisher.join()
                assert seqs == list(range(total)) and sub.dropped == 0

    run(main())


def test_a_slow_latest_consumer_gets_drops_counted(ctx, served, loop_mode):
    """As in the sync client: the seqs seen only grow, each frame holds
    what was published with its seq, the drops add up to the gaps, and
    the last frame arrives."""
    server = served()
    total = 300

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            async with cam.frames.subscribe(policy="latest") as sub:

                def publish() -> None:
                    for i in range(total):
                        server.frames.publish(_frame(i), {"i": i})

                publisher = threading.Thread(target=publish)
                publisher.start()
                seqs, dropped = [], 0
                async for frame, info in sub:
                    assert int(frame[0]) == info["i"] % 251
                    assert info["seq"] == info["i"]
                    seqs.append(info["seq"])
                    dropped += info["dropped"]
                    if info["i"] == total - 1:
                        break
                    await asyncio.sleep(0.001)  # slower than the publisher
                publisher.join()
                assert seqs == sorted(set(seqs))
                assert len(seqs) + dropped == total  # subscribed before the first
                assert sub.dropped == dropped and sub.received == len(seqs)

    run(main())


def test_queue_drops_the_oldest_and_counts_exactly(ctx, served):
    """queue=4, consumer stalled: the 2 frames its credit let ahead, then
    the newest 4; the 14 in between dropped, counted on both sides (the
    sync client's test, through the asyncio subscription)."""
    server = served()

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            async with cam.frames.subscribe(policy="queue", queue=4) as sub:
                hub_sub = _hub_sub(server)[0]
                await until(lambda: hub_sub.credit == 2)
                for i in range(2):  # taken by its credit: now it has none left
                    server.frames.publish(_frame(i), {"i": i})
                await until(lambda: sub.received == 2)
                for i in range(2, 20):
                    server.frames.publish(_frame(i), {"i": i})
                assert server.frames.stats["pending"] == 4
                got = [await sub.get(WAIT_S) for _ in range(6)]
                assert [info["seq"] for _, info in got] == [0, 1, 16, 17, 18, 19]
                assert [info["dropped"] for _, info in got] == [0, 0, 14, 0, 0, 0]
                assert [int(f[0]) for f, _ in got] == [0, 1, 16, 17, 18, 19]
                assert sub.dropped == 14 and server.frames.stats["dropped"] == 14
                server.frames.publish(_frame(99), {"i": "sentinel"})
                assert (await sub.get(WAIT_S))[1]["i"] == "sentinel"

    run(main())


def test_callbacks_run_on_the_loop_in_order(ctx, served):
    server = served()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            got: list[tuple[int, bool]] = []

            def on_frame(frame: Any, info: dict) -> None:
                got.append((info["seq"], asyncio.get_running_loop() is loop))
                if info["seq"] == 2:
                    raise ValueError("logged, not fatal")

            sub = await cam.frames.subscribe(on_frame, policy="queue", queue=8)
            for i in range(5):
                server.frames.publish(_frame(i))
            await until(lambda: len(got) == 5)
            assert got == [(i, True) for i in range(5)]
            with pytest.raises(TypeError, match="callback"):
                await sub.get(0)
            await sub.aclose()

    run(main())


def test_an_async_callback_is_given_the_next_frame_when_it_ends(ctx, served):
    """latest: while the callback's task waits, newer frames replace each
    other in the server; when it ends, the newest comes, drops counted."""
    server = served()

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            got: list[tuple[int, int]] = []
            started, release = asyncio.Event(), asyncio.Event()

            async def on_frame(frame: Any, info: dict) -> None:
                got.append((info["seq"], info["dropped"]))
                started.set()
                await release.wait()

            async with cam.frames.subscribe(on_frame, policy="latest") as sub:
                server.frames.publish(_frame(0))
                await asyncio.wait_for(started.wait(), WAIT_S)
                for i in range(1, 5):
                    server.frames.publish(_frame(i))
                assert server.frames.stats["pending"] == 1  # the newest waits
                release.set()
                await until(lambda: len(got) == 2)
                assert got == [(0, 0), (4, 3)] and sub.dropped == 3
            assert sub.closed

    run(main())


def test_latest_reads_one_frame_and_unsubscribes(ctx, served):
    server = served()

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            reader = asyncio.create_task(cam.frames.latest(WAIT_S))
            await until(lambda: server.frames.stats["subscribers"] == 1)
            while not reader.done():  # until the subscription's credit took one
                server.frames.publish(b"one")
                await asyncio.sleep(0.01)
            frame, info = await reader
            assert bytes(frame) == b"one" and info["seq"] >= 0
            await until(lambda: server.frames.stats["subscribers"] == 0)
            assert not cam.frames.subscriptions

    run(main())


def test_calls_on_the_same_proxy_go_on_while_streaming(ctx, served, loop_mode):
    """A consumer task iterating frames and many calls in flight on the
    same proxy, at once: every call answered, every frame in order."""
    server = served()

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            async with cam.frames.subscribe(policy="queue", queue=256) as sub:
                stop = threading.Event()

                def publish() -> None:
                    i = 0
                    while not stop.is_set() and i < 2000:
                        server.frames.publish(_frame(i, 50_000), {"i": i})
                        i += 1
                        stop.wait(0.002)

                async def consume() -> int:
                    last = -1
                    async for _, info in sub:
                        assert info["seq"] > last
                        last = info["seq"]
                        if sub.received >= 40:
                            return sub.received
                    return sub.received

                publisher = threading.Thread(target=publish)
                publisher.start()
                try:
                    consumer = asyncio.create_task(consume())
                    replies = await asyncio.gather(*(cam.ping() for _ in range(200)))
                    assert replies == ["pong"] * 200
                    assert await consumer >= 40
                finally:
                    stop.set()
                    publisher.join()

    run(main())


def test_policies_are_checked_and_streams_cannot_be_assigned(ctx, served):
    server = served()

    async def main() -> None:
        async with framerpc.aio.connect(Cam, server.url, context=ctx) as cam:
            with pytest.raises(ValueError):
                cam.frames.subscribe(policy="newest")
            with pytest.raises(ValueError):
                cam.frames.subscribe(policy="queue", queue=0)
            with pytest.raises(AttributeError, match="cannot be assigned"):
                cam.frames = None
            assert not cam.frames.subscriptions
            assert type(cam).frames.__doc__ == "sensor images"

    run(main())
